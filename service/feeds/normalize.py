"""Turn a FeedEntry as a feed states it into an Item the service can store and mail.

Canonical URLs (so two tag feeds naming one article agree), plain-text titles, summaries
sanitized with nh3 to a small allowlist with absolute links, dates in UTC.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import nh3
from lxml import etree
from lxml import html as lxml_html

from service.feeds.types import FeedEntry, Item

__all__ = [
    "canonical_url",
    "entry_guid",
    "normalize_entries",
    "normalize_entry",
    "plain_text",
    "sanitize_html",
]

SUMMARY_TEXT_LIMIT = 2000  # characters of visible text in a stored summary
TITLE_LIMIT = 300
FUTURE_TOLERANCE = timedelta(minutes=10)  # clocks drift; beyond this a date is a mistake

# -- URLs ---------------------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Click and campaign trackers: they make one article look like many.
_TRACKERS = frozenset(
    {
        "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid", "ttclid",
        "igshid", "mc_cid", "mc_eid", "_hsenc", "_hsmi", "mkt_tok", "oly_anon_id", "oly_enc_id",
        "vero_id", "wickedid", "__s", "_openstat",
    }
)  # fmt: skip
_PERCENT = re.compile(r"%[0-9a-fA-F]{2}")
_PATH_SAFE = "/%:@!$&'()*+,;=~"  # kept as they are by quote(), with letters, digits and "_.-~"
_PATH_AS_IS = re.compile(r"[A-Za-z0-9_.\-~/:@!$&'()*+,;=]*")  # all that, but no "%" escapes
_PLAIN_HOST = re.compile(r"[A-Za-z0-9.\-]+")


def _is_tracker(param: str) -> bool:
    name = param.split("=", 1)[0].lower()
    return name.startswith("utm_") or name in _TRACKERS


def canonical_url(url: str, base: str | None = None) -> str:
    """The URL in one spelling: absolute, scheme and host lower-case, no fragment, no trackers.

    Default ports go; other query parameters keep their order and spelling. Non-ASCII and
    spaces in the path are percent-encoded, existing escapes upper-cased.
    """
    return _canonical(url, base)[0]


def _canonical(url: str, base: str | None) -> tuple[str, str, str | None]:
    """canonical_url, with its scheme and, when that was plain to see, its host (else None)."""
    url = url.strip()
    parts = urlsplit(url)
    # urljoin gives back an absolute URL with a host unchanged (up to what urlsplit undoes
    # anyway), except that it drops a ";" ending the path: only the rest needs joining.
    if base and not (parts.netloc and parts.scheme and not parts.path.endswith(";")):
        url = urljoin(base.strip(), url)
        parts = urlsplit(url)
    scheme = parts.scheme  # urlsplit lower-cases it
    if scheme not in _DEFAULT_PORTS:
        return urlunsplit((scheme, parts.netloc, parts.path, parts.query, "")), scheme, None
    host = None
    if _PLAIN_HOST.fullmatch(parts.netloc):  # no user, port, IPv6 literal or zone
        netloc = parts.netloc.lower().rstrip(".")
        host = netloc or None  # none left: what the path then starts with reads as the host
    else:
        try:
            port = parts.port
        except ValueError:  # a port that is not a number: keep the netloc as written
            port = None
        netloc = (parts.hostname or "").rstrip(".")
        if ":" in netloc:
            netloc = f"[{netloc}]"  # IPv6 literal
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (f"{userinfo}@" if userinfo else "") + netloc
        if port is not None and port != _DEFAULT_PORTS[scheme]:
            netloc += f":{port}"
    path = parts.path or "/"
    if not _PATH_AS_IS.fullmatch(path):  # else quote() would return it as it is, no escapes
        path = _PERCENT.sub(lambda m: m.group(0).upper(), quote(path, safe=_PATH_SAFE))
    query = parts.query
    if query:
        query = "&".join(p for p in query.split("&") if p and not _is_tracker(p))
    return urlunsplit((scheme, netloc, path, query, "")), scheme, host


def _http_url(value: str | None, base: str | None) -> str | None:
    """``value`` as a canonical http(s) URL, or None when it is not one."""
    if not value or not value.strip():
        return None
    try:
        url, scheme, host = _canonical(value, base)
    except ValueError:  # urlsplit rejects some malformed hosts (e.g. an unclosed "[")
        return None
    if scheme not in _DEFAULT_PORTS:
        return None
    if host is None:  # user info, a port or an IPv6 literal: read the host back
        host = urlsplit(url).hostname
    return url if host else None


# -- HTML ---------------------------------------------------------------------------------------

ALLOWED_TAGS = frozenset(
    {
        "p", "br", "a", "strong", "em", "b", "i", "u", "ul", "ol", "li", "blockquote", "code",
        "pre", "h2", "h3", "h4", "img", "figure", "figcaption",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "width", "height"}}
# Removed with everything inside them; other tags outside the allowlist keep their text.
_DROP_WITH_CONTENT = frozenset(
    {
        "script", "style", "iframe", "object", "embed", "template", "noscript", "svg", "math",
        "form", "select", "textarea", "button", "head", "title", "frameset", "noembed",
    }
)  # fmt: skip
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_EMPTY_IMG = re.compile(r"<img(?![^>]*\ssrc=)[^>]*>")  # its data: or javascript: src removed


def sanitize_html(html_text: str, base_url: str) -> str:
    """HTML reduced to the allowlist, safe to put in a mail or a page.

    No scripts, frames, styles, event attributes, or URLs other than http(s) and mailto
    (``javascript:`` and ``data:`` go); relative ``href``/``src`` made absolute against
    ``base_url``; links get ``rel="noopener noreferrer"``. Images stay (a summary often leads
    with one) but only from http(s) URLs.
    """
    if not html_text:
        return ""
    cleaned = nh3.clean(
        _CONTROL.sub("", html_text), url_relative=_relative_url_rule(base_url), **_NH3_OPTIONS
    )
    return _EMPTY_IMG.sub("", cleaned).strip()


# Built once, not for every summary (a third of nh3.clean's time went to building them).
_NH3_OPTIONS: dict[str, Any] = {
    "tags": set(ALLOWED_TAGS),
    "clean_content_tags": set(_DROP_WITH_CONTENT),
    "attributes": {tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
    "url_schemes": {"http", "https", "mailto"},
    "link_rel": "noopener noreferrer",
    "strip_comments": True,
}


def _relative_url_rule(
    base_url: str,
) -> tuple[Literal["rewrite_with_base"], str] | Literal["deny"]:
    # Without an absolute base a relative link could only be guessed at: drop it.
    return ("rewrite_with_base", base_url) if _http_url(base_url, None) else "deny"


_TAG = re.compile(r"<!--.*?-->|<(script|style)\b.*?</\1\s*>|<[a-zA-Z/!?][^>]*>", re.S | re.I)
_SPACE = re.compile(r"\s+")


def plain_text(s: str, limit: int = TITLE_LIMIT) -> str:
    """Text as a reader sees it: tags stripped, entities decoded, whitespace collapsed.

    Longer than ``limit`` characters, it is cut at a word and ends with an ellipsis.
    """
    if not s:
        return ""
    if "<" in s:
        s = _TAG.sub(" ", s)
    if "&" in s:
        s = html.unescape(s)
    if s.isprintable() and "  " not in s:  # no control characters, no whitespace but single " "
        text = s.strip()
    else:
        text = _SPACE.sub(" ", _CONTROL.sub("", s)).strip()
    return _cut_words(text, limit)


def _cut_words(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,.;:-\u2013\u2014") + "…"


def _cap_html(fragment: str, limit: int) -> str:
    """Keep the first ``limit`` characters of text, cutting at a word, with every tag closed."""
    root = lxml_html.fragment_fromstring(fragment, create_parent="div")
    _trim(root, limit)
    inner = [html.escape(root.text or "", quote=False)]
    inner += [etree.tostring(c, encoding="unicode", method="html") for c in root]
    return "".join(inner).strip()


def _trim(el: etree._Element, budget: int) -> int:
    """Cut ``el``'s text after ``budget`` characters, dropping what follows; the budget left."""
    text = el.text or ""
    if len(text) >= budget:
        el.text = _ellipsis(text, budget)
        _drop_after(el, None)
        return 0
    budget -= len(text)
    for child in list(el):
        budget = _trim(child, budget)
        tail = child.tail or ""
        if budget <= 0:
            child.tail = None if child.tail == "…" or _ends_cut(child) else "…"
            _drop_after(el, child)
            return 0
        if len(tail) >= budget:
            child.tail = _ellipsis(tail, budget)
            _drop_after(el, child)
            return 0
        budget -= len(tail)
    return budget


def _ellipsis(text: str, budget: int) -> str:
    return _cut_words(text, budget) if len(text) > budget else text.rstrip() + "…"


def _ends_cut(el: etree._Element) -> bool:
    """The element's last text already ends with the ellipsis _trim puts where it cuts."""
    last = el
    while len(last) and not (last[-1].tail or "").strip():
        last = last[-1]
    return (last.tail if last is not el and last.tail else last.text or "").endswith("…")


def _drop_after(parent: etree._Element, child: etree._Element | None) -> None:
    keep = 0 if child is None else parent.index(child) + 1
    for later in list(parent)[keep:]:
        parent.remove(later)


# -- entries ------------------------------------------------------------------------------------


def entry_guid(entry: FeedEntry, url: str | None = None) -> str:
    """The entry's identity in its feed: its guid, else its link, else a hash of title and date."""
    if entry.guid and entry.guid.strip():
        return entry.guid.strip()
    if url:
        return url
    date = entry.published or entry.updated
    seed = f"{entry.title or ''}\n{date.isoformat() if date else ''}"
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def _utc(value: datetime | None, now: datetime) -> datetime | None:
    if value is None:
        return None
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return now if value > now + FUTURE_TOLERANCE else value


def normalize_entry(
    entry: FeedEntry, *, feed_url: str, site_url: str | None, now: datetime
) -> Item | None:
    """The entry ready to store, or None when it has no http(s) URL a mail could link to.

    Relative links resolve against the site's home page (as the feed names it), else the feed
    URL; links inside the summary resolve against the item's own URL.
    """
    return _normalize(entry, _base(feed_url, site_url), _aware(now))


def normalize_entries(
    entries: Iterable[FeedEntry], *, feed_url: str, site_url: str | None, now: datetime
) -> list[Item]:
    """normalize_entry for each of a feed's entries, without those it drops; what they share
    is worked out once."""
    base, now = _base(feed_url, site_url), _aware(now)
    return [item for entry in entries if (item := _normalize(entry, base, now))]


def _base(feed_url: str, site_url: str | None) -> str:
    return urljoin(feed_url, site_url) if site_url else feed_url


def _aware(now: datetime) -> datetime:
    return now if now.tzinfo else now.replace(tzinfo=UTC)


def _normalize(entry: FeedEntry, base: str, now: datetime) -> Item | None:
    url = _http_url(entry.link, base) or _http_url(entry.guid, None)  # a guid must be absolute
    if url is None:
        return None
    summary_html = _summary(entry, url)
    title = plain_text(entry.title or "") or _title_from(summary_html) or url
    return Item(
        guid=entry_guid(entry, url),
        url=url,
        title=title,
        summary_html=summary_html,
        author=plain_text(entry.author or "", 200) or None,
        published_at=_utc(entry.published, now) or _utc(entry.updated, now),
        categories=_categories(entry.categories),
        content_hash=hashlib.sha256(f"{title}\n{summary_html}".encode()).hexdigest(),
    )


def _summary(entry: FeedEntry, url: str) -> str:
    """The summary, or the start of the content when the feed gives no summary."""
    for source in (entry.summary, entry.content):
        cleaned = sanitize_html(source or "", url)
        text = plain_text(cleaned, SUMMARY_TEXT_LIMIT + 2)
        if len(text) > SUMMARY_TEXT_LIMIT:
            return _cap_html(cleaned, SUMMARY_TEXT_LIMIT)
        if text or "<img" in cleaned:
            return cleaned
    return ""


def _title_from(summary_html: str, words: int = 12) -> str:
    text = plain_text(summary_html, 10 * words).split()
    return " ".join(text[:words]) + ("…" if len(text) > words else "")


def _categories(raw: tuple[str, ...]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for name in raw:
        text = plain_text(name, 100)
        if text and text.casefold() not in seen:
            seen[text.casefold()] = text
    return tuple(seen.values())
