"""Read a feed body (RSS 0.9x/1.0/2.0, Atom 1.0/0.3, JSON Feed 1.0/1.1) into a ParsedFeed.

The format is told from the content, never from the Content-Type. XML goes through one hardened
lxml parser: entities are never expanded and no DTD, file or URL is ever loaded, so a
billion-laughs or external-entity feed costs what its bytes cost.

Why our own lxml reader (``benchmarks/parse.py``, 55 KB WordPress feed, this 2-core machine):
feedparser ~110 feeds/s, fastfeedparser 4,300-7,000, this module 2,300-2,800. fastfeedparser is
faster, but its parsers run with ``huge_tree=True`` and well-formed UTF-8 goes through a native
extractor whose DTD and entity handling we cannot configure or audit; 20x feedparser is ample
for polling, and here every byte goes through settings we chose.

Public surface: ``parse_feed``, ``parse_date``, ``discover_feeds``, ``looks_like_html``.
"""

from __future__ import annotations

import codecs
import html
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_tz
from functools import lru_cache
from html.entities import name2codepoint
from typing import Any, Literal
from urllib.parse import urljoin

from lxml import etree

from service.feeds.types import FeedEntry, FeedError, ParsedFeed

__all__ = ["discover_feeds", "looks_like_html", "parse_date", "parse_feed"]

ATOM10 = "http://www.w3.org/2005/Atom"
ATOM03 = "http://purl.org/atom/ns#"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RSS10 = "http://purl.org/rss/1.0/"
RSS090 = "http://my.netscape.com/rdf/simple/0.9/"
DC = "http://purl.org/dc/elements/1.1/"
DCTERMS = "http://purl.org/dc/terms/"
CONTENT = "http://purl.org/rss/1.0/modules/content/"
XHTML = "http://www.w3.org/1999/xhtml"
# Namespaces an RSS element may carry and still be the core RSS element (userland's are RSS 2.0).
RSS_CORE = (
    "",
    RSS10,
    RSS090,
    "http://backend.userland.com/rss2",
    "http://backend.userland.com/rss",
)


# -- entry point ----------------------------------------------------------------------------


def parse_feed(
    body: bytes, *, content_type: str | None = None, url: str | None = None
) -> ParsedFeed:
    """Parse a fetched body; raise FeedError with an operator-facing message if it isn't a feed.

    ``content_type`` only lends its charset when the body declares none; ``url`` names the feed
    in error messages.
    """
    head = _strip_bom(body[:4096]).lstrip()
    if not head.strip(b"\x00"):
        raise FeedError(_named("empty body", url))
    if head[:1] == b"{" or head[:2] in (b"{\x00", b"\x00{"):
        return _parse_json_feed(body, url)
    if looks_like_html(body):
        raise FeedError(_named("not a feed: looks like an HTML page", url))
    data = _strip_doctype(_to_utf8(body, _charset(content_type)))
    lifted_data, lifted = _lift_cdata(data)
    feed = _read_tree(_parse_xml(lifted_data, url), url)
    if lifted:
        feed = _restore_cdata(feed, lifted)
    if feed.entries and _last_item_cut(data, "feed" if feed.kind == "atom" else feed.kind):
        # The body was cut inside its last item: keep what a reader saw whole.
        feed = replace(feed, entries=feed.entries[:-1])
    return feed


def _named(message: str, url: str | None) -> str:
    return f"{message} ({url})" if url else message


# -- encodings ------------------------------------------------------------------------------

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_SNIFF = (
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00", "utf-16-le"),
    (b"\x00<", "utf-16-be"),
    (b"\x4c\x6f\xa7\x94", "cp037"),  # "<?xm" in EBCDIC; the declaration names the code page
)
_DECLARED = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")
_CHARSET = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9._:-]+)""", re.IGNORECASE)
# Browsers read ISO-8859-1 and ASCII as windows-1252 (WHATWG); feeds rely on it for quotes.
_ALIASES = {"iso-8859-1": "cp1252", "latin-1": "cp1252", "ascii": "cp1252"}


def _strip_bom(data: bytes) -> bytes:
    for bom, _ in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :]
    return data


def _charset(content_type: str | None) -> str | None:
    match = _CHARSET.search(content_type or "")
    return match.group(1) if match else None


def _codec(name: str | None) -> str | None:
    if not name:
        return None
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        return None
    return _ALIASES.get(canonical, canonical)


def _candidates(body: bytes, charset: str | None) -> Iterator[tuple[str, int]]:
    """Encodings to try, most authoritative first, with how many leading bytes to skip."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            yield name, len(bom)
            break
    # Without a BOM, how the "<" of the first tag is spelt gives the encoding family away.
    sniffed = next((name for head, name in _SNIFF if body.startswith(head)), None)
    if sniffed and sniffed != "cp037":  # EBCDIC has many code pages: the declared one first
        yield sniffed, 0
    head = body[:512] if sniffed != "cp037" else body[:512].decode("cp037").encode()
    match = _DECLARED.match(head)
    declared = match.group(1).decode() if match else None
    names: tuple[str | None, ...] = (declared, sniffed, charset, "utf-8")
    for label in names:
        codec = _codec(label)
        if codec:
            yield codec, 0
    if "cp1252" in (_codec(declared), _codec(charset)):
        yield "latin-1", 0  # windows-1252 leaves five bytes undefined; latin-1 none
    yield _guess_single_byte(body), 0


def _guess_single_byte(body: bytes) -> str:
    """windows-1251 when the high bytes read as Cyrillic letters, else windows-1252."""
    high = [b for b in body[:65536] if b >= 0xC0]
    return (
        "cp1251" if len(high) > 20 and sum(b < 0xE0 for b in high) < len(high) * 0.9 else "cp1252"
    )


def _to_utf8(body: bytes, charset: str | None) -> bytes:
    """The body re-encoded as UTF-8, read in the first candidate encoding that fits it."""
    for codec, skip in _candidates(body, charset):
        try:
            text = body[skip:].decode(codec)
        except (UnicodeDecodeError, LookupError):
            continue
        if text.lstrip()[:1] != "<":
            continue  # e.g. an ASCII body that claims UTF-16: decodes, but to nonsense
        if codec == "utf-8":
            return _declare_html_entities(body[skip:].lstrip())
        return _declare_html_entities(text.lstrip().encode("utf-8"))
    return _declare_html_entities(body.decode("cp1252", errors="replace").encode("utf-8"))


# XML's own five are skipped by the pattern itself: escaped HTML is full of them.
_NAMED_ENTITY = re.compile(rb"&(?!(?:amp|lt|gt|quot|apos);)([A-Za-z][A-Za-z0-9]{1,31});")


def _declare_html_entities(data: bytes) -> bytes:
    """Turn HTML entity names (``&nbsp;``) into character references XML understands.

    Feeds use them undeclared; as references they would be dropped. Names that are neither
    XML nor HTML stay, and stay unexpanded whatever the document's DTD says about them.
    """

    def replace(match: re.Match[bytes]) -> bytes:
        codepoint = name2codepoint.get(match.group(1).decode())
        return b"&#%d;" % codepoint if codepoint else match.group(0)

    return _NAMED_ENTITY.sub(replace, data) if b"&" in data else data


# A doctype's internal subset is where entities are declared. Nothing in it is ever used (we
# expand no entity), and libxml2 gives up on some (parameter entities, with loading off), so
# it goes, as feedparser drops it too. The parser below stays hardened all the same.
_DOCTYPE = re.compile(
    rb"^((?:\s|<\?[^>]*>|<!--.*?-->)*)<!DOCTYPE\s[^\[>]*(?:\[.*?\]\s*)?>", re.IGNORECASE | re.DOTALL
)


def _strip_doctype(data: bytes) -> bytes:
    match = _DOCTYPE.match(data)  # anchored: fails at the root element when there is none
    return data if match is None else match.group(1) + data[match.end() :]


# -- XML ------------------------------------------------------------------------------------

_local = threading.local()  # an lxml parser serves one thread at a time


def _parser() -> etree.XMLParser:
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = etree.XMLParser(
            encoding="utf-8",  # _to_utf8 always hands UTF-8, whatever the declaration says
            resolve_entities=False,
            load_dtd=False,
            no_network=True,
            huge_tree=False,
            recover=True,
            remove_comments=True,
            remove_pis=True,
            collect_ids=False,
        )
    return parser


def _parse_xml(data: bytes, url: str | None) -> etree._Element:
    start = data.find(b"<")
    data = data[start:] if start > 0 else data
    parser = _parser()
    try:
        root: etree._Element | None = etree.fromstring(data, parser)  # None: nothing recovered
    except etree.XMLSyntaxError as exc:
        raise FeedError(_named(f"malformed XML: {exc.msg}", url)) from exc
    if root is None:
        errors = parser.error_log
        reason = errors[0].message if len(errors) else "no element found"
        raise FeedError(_named(f"malformed XML: {reason}", url))
    return root


# -- large CDATA sections ---------------------------------------------------------------------
# libxml2 reads CDATA about four times slower than escaped text, and a WordPress feed is mostly
# CDATA (content:encoded). Big sections are swapped for a placeholder before the parse and put
# back in the strings read out of the tree; that halves the time a typical tag feed takes.
# Lifted text skips libxml2's check for control characters; normalize removes them.

_CDATA_START, _CDATA_END = b"<![CDATA[", b"]]>"
_LIFT_MIN = 512  # bytes: smaller sections cost less than their bookkeeping
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"  # private-use characters, never markup
_MARK = re.compile(f"{_MARK_OPEN}(\\d+){_MARK_CLOSE}")


def _lift_cdata(data: bytes) -> tuple[bytes, list[str]]:
    """The document with its large CDATA sections replaced by numbered placeholders.

    Only RSS is lifted (Atom re-serializes xhtml content, where a placeholder would be text).
    Lifting stops at the first comment or markup declaration, where a CDATA opener need not be
    one.
    """
    if _CDATA_START not in data or b"<rss" not in data[:4096]:
        return data, []
    parts: list[bytes] = []
    lifted: list[str] = []
    position = 0
    while (start := data.find(_CDATA_START, position)) >= 0:
        declaration = data.find(b"<!", position, start)
        end = data.find(_CDATA_END, start)
        if end < 0 or declaration >= 0:
            break
        if end - start >= _LIFT_MIN:
            section = data[start + len(_CDATA_START) : end].decode("utf-8", errors="replace")
            parts += [data[position:start], f"{_MARK_OPEN}{len(lifted)}{_MARK_CLOSE}".encode()]
            lifted.append(section)
        else:
            parts.append(data[position : end + len(_CDATA_END)])
        position = end + len(_CDATA_END)
    if not lifted:
        return data, []
    parts.append(data[position:])
    return b"".join(parts), lifted


def _restore_cdata(feed: ParsedFeed, lifted: list[str]) -> ParsedFeed:
    def put_back(value: str | None) -> str | None:
        if not value or _MARK_OPEN not in value:
            return value
        return _MARK.sub(section, value).strip() or None

    def section(match: re.Match[str]) -> str:
        index = int(match.group(1))  # a look-alike the feed wrote itself stays as it is
        return lifted[index] if index < len(lifted) else match.group(0)

    entries = [
        replace(
            e,
            guid=put_back(e.guid),
            link=put_back(e.link),
            title=put_back(e.title),
            summary=put_back(e.summary),
            content=put_back(e.content),
            author=put_back(e.author),
            categories=tuple(c for c in map(put_back, e.categories) if c),
        )
        for e in feed.entries
    ]
    return replace(feed, title=put_back(feed.title), link=put_back(feed.link), entries=entries)


# -- truncation -----------------------------------------------------------------------------

_OPEN_ITEM = re.compile(rb"<(?:[\w.-]+:)?(?:item|entry)\b[^>]*?(/?)>")
_CLOSE_ITEM = re.compile(rb"</(?:[\w.-]+:)?(?:item|entry)\s*>")


def _last_item_cut(data: bytes, root_name: str) -> bool:
    # "rdf" matches the end of </rdf:RDF> case-insensitively, like "rss" and "feed" do theirs.
    """The body stops before its root's end tag, inside an item or entry that never closed."""
    end_tag = re.compile(rb"</(?:[\w.-]+:)?%s\s*>" % root_name.encode(), re.IGNORECASE)
    if end_tag.search(data, max(0, len(data) - 4096)):
        return False
    opened = None
    for opened in _OPEN_ITEM.finditer(data):  # noqa: B007 - only the last one matters
        pass
    if opened is None or opened.group(1):  # no item, or the last one is an empty <item/>
        return False
    return _CLOSE_ITEM.search(data, opened.end()) is None


def _read_tree(root: etree._Element, url: str | None) -> ParsedFeed:
    name = etree.QName(root)
    local = name.localname.lower()
    if local == "rss":
        feed = _read_rss(root)
    elif local == "rdf" and name.namespace == RDF:
        feed = _read_rdf(root)
    elif local == "feed":
        feed = _read_atom(root, name.namespace or ATOM10)
    elif local == "html":
        raise FeedError(_named("not a feed: looks like an HTML page", url))
    else:
        raise FeedError(_named(f"not a feed: the document's root element is <{local}>", url))
    return feed


# -- element helpers ------------------------------------------------------------------------


def _split(tag: object) -> tuple[str, str]:
    """(namespace, local name) of a tag; ("", "") for comments and entities."""
    if not isinstance(tag, str):
        return "", ""
    if tag[:1] == "{":
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _text(el: etree._Element) -> str:
    """The element's text, its children's and their tails; unexpanded entities left out."""
    if not len(el):
        return el.text or ""
    parts = [el.text or ""]
    for child in el:
        if isinstance(child.tag, str):
            parts.append(_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _clean(value: str | None) -> str | None:
    value = value.strip() if value else None
    return value or None


_XMLNS = re.compile(r"""\sxmlns(?::[\w.-]+)?=(?:"[^"]*"|'[^']*')""")


def _inner_xhtml(el: etree._Element) -> str:
    """Markup inside an Atom ``type="xhtml"`` construct, namespace prefixes dropped."""
    for node in el.iter():
        if isinstance(node.tag, str):
            node.tag = _split(node.tag)[1]
    parts = [html.escape(el.text or "", quote=False)]
    for child in el:
        if isinstance(child.tag, str):
            parts.append(etree.tostring(child, encoding="unicode", method="html"))
        else:
            parts.append(html.escape(child.tail or "", quote=False))
    return _XMLNS.sub("", "".join(parts))  # lxml repeats in-scope declarations on each child


def _link_href(el: etree._Element) -> str | None:
    """An href as the document means it: resolved against any ``xml:base`` in scope."""
    href = _clean(el.get("href"))
    base = el.base  # None unless the document carries xml:base (we give lxml no URL)
    return urljoin(base, href) if href and base else href


def _int(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isdigit() and 0 < int(value) < 1_000_000 else None


# -- RSS 0.9x/2.0 and RDF (RSS 0.90, 1.0) -----------------------------------------------------

RssField = Literal["guid", "link", "title", "summary", "content", "author", "published", "updated"]
_RSS_FIELD_KEYS: dict[tuple[str, str], RssField] = {
    **{(ns, "guid"): "guid" for ns in RSS_CORE},
    **{(ns, "link"): "link" for ns in RSS_CORE},
    **{(ns, "title"): "title" for ns in RSS_CORE},
    **{(ns, "description"): "summary" for ns in RSS_CORE},
    **{(ns, "author"): "author" for ns in RSS_CORE},
    **{(ns, "pubDate"): "published" for ns in RSS_CORE},
    (CONTENT, "encoded"): "content",
    (DC, "creator"): "author",
    (DC, "date"): "published",
    (DCTERMS, "issued"): "published",
    (DCTERMS, "modified"): "updated",
    (ATOM10, "id"): "guid",
    (ATOM10, "updated"): "updated",
    (ATOM10, "published"): "published",
    (ATOM10, "summary"): "summary",
    (DC, "title"): "title",
    (DC, "description"): "summary",
}
_CATEGORY_KEYS = {*((ns, "category") for ns in RSS_CORE), (DC, "subject")}


def _clark(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}" if ns else local


# Keyed on lxml's tag strings: one dict lookup per child instead of splitting every tag.
_RSS_FIELDS = {_clark(*key): field for key, field in _RSS_FIELD_KEYS.items()}
_CATEGORY = {_clark(*key) for key in _CATEGORY_KEYS}
_ATOM_LINK = _clark(ATOM10, "link")


def _read_rss_item(item: etree._Element) -> FeedEntry:
    found: dict[str, str] = {}
    categories: list[str] = []
    for child in item:
        key = child.tag
        if not isinstance(key, str):
            continue
        field = _RSS_FIELDS.get(key)
        if field is not None and field not in found:
            value = _text(child).strip() or (child.get("href") if field == "link" else None)
            if value:
                found[field] = value
        elif key in _CATEGORY:
            categories.extend(c for c in [_text(child).strip()] if c)
        elif key == _ATOM_LINK and child.get("rel", "alternate") == "alternate":
            found.setdefault("atom_link", child.get("href") or "")
    return FeedEntry(
        guid=found.get("guid") or _clean(item.get(f"{{{RDF}}}about")),
        link=found.get("link") or found.get("atom_link") or None,
        title=found.get("title"),
        summary=found.get("summary"),
        content=found.get("content"),
        author=found.get("author"),
        published=parse_date(found.get("published")),
        updated=parse_date(found.get("updated")),
        categories=tuple(categories),
    )


def _is_item(el: etree._Element) -> bool:
    ns, local = _split(el.tag)
    return local == "item" and ns in RSS_CORE


def _channel_info(channel: etree._Element | None) -> tuple[str | None, str | None, int | None]:
    if channel is None:
        return None, None, None
    title = link = ttl = None
    for child in channel:
        ns, local = _split(child.tag)
        if ns not in RSS_CORE:
            if (ns, local) == (ATOM10, "link") and link is None and child.get("rel") == "alternate":
                link = _clean(child.get("href"))
            continue
        if local == "title" and title is None:
            title = _clean(_text(child))
        elif local == "link" and (link is None):
            link = _clean(_text(child))
        elif local == "ttl":
            ttl = _int(child.text)
    return title, link, ttl


def _read_rss(root: etree._Element) -> ParsedFeed:
    channel = next((c for c in root if _split(c.tag)[1] == "channel"), None)
    # RSS 0.9x items belong in <channel>, but some feeds put them beside it.
    items = [c for c in channel if _is_item(c)] if channel is not None else []
    items += [c for c in root if _is_item(c)]
    title, link, ttl = _channel_info(channel)
    return ParsedFeed(kind="rss", title=title, link=link, ttl_minutes=ttl, entries=_entries(items))


def _read_rdf(root: etree._Element) -> ParsedFeed:
    channel = next((c for c in root if _split(c.tag)[1] == "channel"), None)
    items = [c for c in root if _is_item(c)]
    title, link, ttl = _channel_info(channel)
    return ParsedFeed(kind="rdf", title=title, link=link, ttl_minutes=ttl, entries=_entries(items))


def _entries(items: list[etree._Element]) -> list[FeedEntry]:
    return [_read_rss_item(item) for item in items]


# -- Atom 1.0 (and 0.3) -----------------------------------------------------------------------


def _atom_text(el: etree._Element, *, as_html: bool) -> str | None:
    """An Atom text construct: HTML when ``as_html`` (plain text escaped), else as served."""
    kind = (el.get("type") or "text").lower()
    if "xhtml" in kind:
        div = next((c for c in el if _split(c.tag)[1] == "div"), None)
        return _clean(_inner_xhtml(div if div is not None else el))
    if len(el) and "html" not in kind and el.get("mode") == "xml":
        return _clean(_inner_xhtml(el))  # Atom 0.3 inline markup
    value = _text(el)
    if as_html and "html" not in kind:
        value = html.escape(value, quote=False)
    return _clean(value)


def _alternate(links: list[etree._Element]) -> str | None:
    """The entry's page: rel="alternate" (the default), text/html preferred."""
    alternates = [x for x in links if x.get("rel", "alternate") == "alternate" and x.get("href")]
    html_first = sorted(alternates, key=lambda x: "html" not in (x.get("type") or "text/html"))
    return _link_href(html_first[0]) if html_first else None


@lru_cache(maxsize=4)
def _atom_tags(ns: str) -> dict[str, str]:
    """lxml tag → local name for the elements an entry reads in its Atom namespace."""
    names = "link category author title summary content id published updated issued modified"
    return {_clark(ns, name): name for name in [*names.split(), "created"]}


def _read_atom_entry(entry: etree._Element, ns: str) -> FeedEntry:
    found: dict[str, str | None] = {}
    links: list[etree._Element] = []
    categories: list[str] = []
    own = _atom_tags(ns)
    for child in entry:
        tag = child.tag
        local = own.get(tag) if isinstance(tag, str) else None
        if local is None:
            child_ns, local = _split(child.tag)
            if (child_ns, local) == (DC, "subject") and child.text:
                categories.append(child.text.strip())
            elif (child_ns, local) in ((DC, "creator"), (DC, "date")):
                found.setdefault("author" if local == "creator" else "published", _text(child))
            continue
        if local == "link":
            links.append(child)
        elif local == "category":
            term = _clean(child.get("label")) or _clean(child.get("term")) or _clean(child.text)
            categories.extend([term] if term else [])
        elif local == "author" and "author" not in found:
            name = next((c for c in child if _split(c.tag)[1] == "name"), None)
            found["author"] = _text(name) if name is not None else _text(child)
        elif local in ("title", "summary", "content") and local not in found:
            found[local] = _atom_text(child, as_html=local != "title")
        elif local in ("id", "published", "updated", "issued", "modified", "created"):
            found.setdefault(local, _text(child))
    return FeedEntry(
        guid=_clean(found.get("id")),
        link=_alternate(links),
        title=found.get("title"),
        summary=found.get("summary"),
        content=found.get("content"),
        author=_clean(found.get("author")),
        published=parse_date(found.get("published") or found.get("issued")),
        updated=parse_date(found.get("updated") or found.get("modified")),
        categories=tuple(c for c in categories if c),
    )


def _read_atom(root: etree._Element, ns: str) -> ParsedFeed:
    ns = ns if ns in (ATOM10, ATOM03) else ATOM10
    title = None
    links: list[etree._Element] = []
    entries = []
    for child in root:
        child_ns, local = _split(child.tag)
        if child_ns != ns and child_ns:
            continue
        if local == "entry":
            entries.append(_read_atom_entry(child, child_ns))
        elif local == "title" and title is None:
            title = _atom_text(child, as_html=False)
        elif local == "link":
            links.append(child)
    return ParsedFeed(kind="atom", title=title, link=_alternate(links), entries=entries)


# -- JSON Feed 1.0 / 1.1 ----------------------------------------------------------------------


def _parse_json_feed(body: bytes, url: str | None) -> ParsedFeed:
    try:
        data = json.loads(body)  # json detects UTF-8/16/32 and skips a UTF-8 BOM
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeedError(_named(f"malformed JSON: {exc}", url)) from exc
    version = data.get("version") if isinstance(data, dict) else None
    if not isinstance(version, str) or "jsonfeed.org/version/" not in version:
        raise FeedError(_named("not a feed: JSON without a JSON Feed version", url))
    items = data.get("items")
    entries = [_json_entry(item) for item in items if isinstance(item, dict)] if items else []
    return ParsedFeed(
        kind="json",
        title=_str(data.get("title")),
        link=_str(data.get("home_page_url")),
        entries=entries,
    )


def _str(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)  # JSON Feed 1.0 ids were sometimes numbers
    return value.strip() or None if isinstance(value, str) else None


def _json_author(item: dict[str, Any]) -> str | None:
    authors = item.get("authors")  # 1.1; 1.0 had a single "author"
    first = authors[0] if isinstance(authors, list) and authors else item.get("author")
    return _str(first.get("name")) if isinstance(first, dict) else None


def _json_entry(item: dict[str, Any]) -> FeedEntry:
    text = _str(item.get("content_text"))
    summary = _str(item.get("summary"))  # plain text in JSON Feed; FeedEntry holds HTML
    tags = item.get("tags")
    return FeedEntry(
        guid=_str(item.get("id")),
        link=_str(item.get("url")) or _str(item.get("external_url")),
        title=_str(item.get("title")),
        summary=html.escape(summary, quote=False) if summary else None,
        content=_str(item.get("content_html"))
        or (html.escape(text, quote=False) if text else None),
        author=_json_author(item),
        published=parse_date(_str(item.get("date_published"))),
        updated=parse_date(_str(item.get("date_modified"))),
        categories=tuple(t.strip() for t in tags if isinstance(t, str) and t.strip())
        if isinstance(tags, list)
        else (),
    )


# -- dates ----------------------------------------------------------------------------------

_ISO = re.compile(
    r"^(\d{4})-?(\d\d)-?(\d\d)(?:[T\s]+(\d\d?):?(\d\d)(?::?(\d\d)(?:[.,](\d+))?)?)?"
    r"\s*(Z|UTC|GMT|[+-]\d\d(?::?\d\d)?)?$",
    re.IGNORECASE,
)
_ZONES = {  # names email.utils does not know, as feeds write them
    "UTC": 0, "Z": 0, "CET": 1, "CEST": 2, "BST": 1, "IST": 5.5, "MSK": 3, "EET": 2, "EEST": 3,
    "WET": 0, "WEST": 1, "JST": 9, "KST": 9, "AEST": 10, "AEDT": 11, "HKT": 8, "SGT": 8,
}  # fmt: skip
_MONTH = re.compile(r"\b(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?", re.IGNORECASE)
_WEEKDAY = re.compile(r"^\s*[A-Za-z]+\.?,?\s+(?=\d)")
_COLON_ZONE = re.compile(r"([+-]\d\d):(\d\d)$")


def parse_date(value: str | None) -> datetime | None:
    """RFC 822, ISO 8601 and their common broken variants as an aware datetime (UTC if no zone).

    None when the text is not a date we can read: the caller then counts from first sight.
    """
    text = (value or "").strip()
    if not text:
        return None
    try:
        return _usual_rfc822(text) or _iso(text) or _rfc822(text)
    except (ValueError, OverflowError):
        return None


def _iso(text: str) -> datetime | None:
    match = _ISO.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    return datetime(
        int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
        micro, tzinfo=_zone(zone),
    )  # fmt: skip


_USUAL = re.compile(
    r"(?:[A-Z][a-z]{2}, )?(\d\d?) ([A-Z][a-z]{2}) (\d{4}) (\d\d):(\d\d):(\d\d) ([+-]\d{4}|GMT|UTC)$"
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}


def _usual_rfc822(text: str) -> datetime | None:
    """The form nearly every RSS feed writes, read without the general machinery."""
    match = _USUAL.match(text)
    if not match or match.group(2) not in _MONTHS:
        return None
    day, month, year, hour, minute, second, zone = match.groups()
    return datetime(
        int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second),
        tzinfo=_zone(zone),
    )  # fmt: skip


@lru_cache(maxsize=256)
def _zone(zone: str | None) -> timezone:
    if not zone or zone.upper() in ("Z", "UTC", "GMT"):
        return UTC
    digits = zone[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + int(digits[2:4] or 0)
    return timezone(timedelta(minutes=-minutes if zone[0] == "-" else minutes))


def _rfc822(text: str) -> datetime | None:
    text = _WEEKDAY.sub("", text)
    text = _MONTH.sub(lambda m: m.group(1), text)
    text = _COLON_ZONE.sub(r"\1\2", text)
    words = text.split()
    offset: float | None = None
    if words and words[-1].upper() in _ZONES:
        offset = _ZONES[words[-1].upper()]
        text = " ".join(words[:-1])
    parts = parsedate_tz(text)
    if parts is None:
        return None
    year, month, day, hour, minute, second = parts[:6]
    seconds = parts[9] if offset is None else int(offset * 3600)
    zone = timezone(timedelta(seconds=seconds or 0))
    return datetime(year, month, day, hour, minute, second, tzinfo=zone).astimezone(UTC)


# -- HTML: detection and feed discovery -------------------------------------------------------

# The first element, past any declaration, doctype or comment, is one only HTML starts with.
_HTML_START = re.compile(
    rb"^(?:\s|<\?xml[^>]*>|<!--.*?-->|<!doctype[^>]*>)*<(?:html|head|body|meta|title|script|div)\b",
    re.IGNORECASE | re.DOTALL,
)
_FEED_TYPES = frozenset(
    {
        "application/rss+xml",
        "application/atom+xml",
        "application/rdf+xml",  # RSS 1.0's type: still a feed a reader subscribes to
        "application/feed+json",
        "application/json",
    }
)


def looks_like_html(body: bytes) -> bool:
    """The body is an HTML page (a CMS error or tag page), not a feed."""
    head = _strip_bom(body[:2048])
    if head[:2] in (b"<\x00", b"\x00<"):
        head = head.replace(b"\x00", b"")  # UTF-16 without a BOM: ASCII markup survives
    return _HTML_START.match(head) is not None


def discover_feeds(html_body: bytes, base_url: str) -> list[str]:
    """Feed URLs a page names with ``<link rel="alternate" type=…>``, absolute, in page order."""
    parser = etree.HTMLParser(no_network=True, recover=True, remove_comments=True)
    try:
        root: etree._Element | None = etree.fromstring(html_body, parser)
    except (etree.XMLSyntaxError, ValueError):
        return []
    if root is None:
        return []
    base = next((b.get("href") for b in root.iter("base") if b.get("href")), None)
    base = urljoin(base_url, base) if base else base_url
    found: list[str] = []
    for link in root.iter("link"):
        rel = (link.get("rel") or "").lower().split()
        kind = (link.get("type") or "").split(";")[0].strip().lower()
        href = (link.get("href") or "").strip()
        if "alternate" in rel and kind in _FEED_TYPES and href:
            url = urljoin(base, href)
            if url.startswith(("http://", "https://")) and url not in found:
                found.append(url)
    return found
