"""Render once per distinct body, personalize per reader.

A body depends on the template, the posts the reader gets, the order of the reader's followed
tags and the reader's time zone (times are shown local). It is built in three steps:

1. The layout: the template rendered (Jinja2 and CSS inlining) and MIME-encoded, with a slot
   where each post's local time goes: the costly part, ~2 ms. It depends on neither the zone
   nor the send time, so a worker process keeps recent ones across batches and editions,
   compressed (`LAYOUT_CACHE`).
2. The body: the layout with the zone's times filled in by joining bytes, ~0.1 ms; once per
   batch for each distinct set of shown times, so zones that show the same times (Paris and
   Berlin) share it.
3. The message: `PreparedMessage.personalize` adds the reader's To, Message-ID and signed
   links, ~0.03 ms.

The "view in browser" link (`archive_url`) names the edition, so the layout, shared across
editions, carries a slot for it, filled in step 2 with the times: every reader of a body gets
the same link (`/archive/editions/{edition}?tags=<the followed tags>`), and no personal token.

A body so made carries the text a render in the reader's zone gives: the first layout of each
template in a process is checked against a full render, and a template that does more with a
time than print it, or a time that HTML escaping would change, is rendered per zone instead.
"""

from __future__ import annotations

import re
import secrets
import string
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any
from urllib.parse import quote

from service.config import Settings
from service.digests.content import PostView, Reader
from service.digests.schedules import zone
from service.mail import (
    DkimSigner,
    OutgoingMessage,
    PreparedMessage,
    Rendered,
    prepare,
    render,
    slot,
)
from service.mail.message import EncodedBody, PackedBody
from service.mail.verp import DeliveryIds
from service.models import Edition, EditionKind, Schedule
from service.readers.tokens import Purpose, TokenData, Tokens

__all__ = ["LAYOUT_CACHE", "MAX_ITEMS", "Composer"]

MAX_ITEMS = 25  # more than this and the mail links to the site instead
HEADLINES = 5
_CACHE_SIZE = 512  # bodies per batch
# Layouts a worker process keeps, compressed (~8 KB each with their key). 100,000 readers
# following 1-4 of 20 tags show a worker ~2,900 tag sets, most of them rare: 2,048 keep 94% of
# the hits of an unbounded cache.
LAYOUT_CACHE = 2048

# The time slots' names carry a nonce, so no post can hold one ("%%nl:t<nonce>_aa%%").
_NONCE = "".join(secrets.choice(string.ascii_lowercase) for _ in range(12))
_TIMES = tuple(f"t{_NONCE}_{a}{b}" for a in "ab" for b in string.ascii_lowercase)[:MAX_ITEMS]
_TIME_SLOTS = tuple(slot(t) for t in _TIMES)
# Times that come out of Jinja's escaping, the CSS inliner and html.escape unchanged.
_PLAIN = re.compile(r"[\w ,.:+-]*")

# (template, site, base URL, title, followed tags, shown posts, number of posts, the edition's
# own subject) -> layout
_LayoutKey = tuple[
    str, str, str, str, tuple[tuple[int, str, str], ...], tuple[PostView, ...], int, str | None
]
_layouts: OrderedDict[_LayoutKey, PackedBody] = OrderedDict()
_layouts_lock = threading.Lock()
_checked: dict[str, bool] = {}  # template -> its layouts give what a full render gives


@dataclass(frozen=True)
class _BodyKey:
    template: str
    timezone: str
    post_ids: tuple[int, ...]
    tag_ids: tuple[int, ...]


class Composer:
    """Builds the messages of one edition; keep one per send batch (it caches bodies)."""

    def __init__(
        self,
        settings: Settings,
        edition: Edition,
        schedule: Schedule | None,
        tags: Mapping[int, tuple[str, str]],
        *,
        tokens: Tokens | None = None,
        signer: DkimSigner | None = None,
        now: datetime,
    ) -> None:
        self.settings = settings
        self.edition = edition
        self.schedule = schedule
        self.tags = tags
        self.tokens = tokens or Tokens(settings)
        self.ids = DeliveryIds(settings)  # signed Message-IDs and VERP addresses
        self.signer = signer
        self.now = now
        self.renders = 0  # full renders (Jinja2 and CSS inlining) this composer did
        self._bodies: OrderedDict[_BodyKey, PreparedMessage] = OrderedDict()
        self._by_times: dict[tuple[_LayoutKey, tuple[str, ...]], PreparedMessage] = {}
        self._layouts: dict[_LayoutKey, PreparedMessage] = {}  # this batch's, headers added

    @property
    def template(self) -> str:
        if self.edition.kind == EditionKind.DIGEST and self.schedule is not None:
            return self.schedule.template
        return str(self.edition.kind)

    def message(self, reader: Reader, posts: Sequence[PostView]) -> OutgoingMessage:
        body = self._body(reader, posts)
        manage = self.tokens.make(Purpose.MANAGE, TokenData(reader.subscriber_id))
        leave = self.tokens.make(Purpose.UNSUBSCRIBE, TokenData(reader.subscriber_id))
        base = self.settings.base_url
        return body.personalize(
            to=reader.email,
            message_id=self.ids.message_id(self.edition.id, reader.delivery_id),
            unsubscribe_url=f"{base}/unsubscribe/{leave}",
            values={"preferences_url": f"{base}/preferences/{manage}"},
            signer=self.signer,
            return_path=self.ids.bounce_address(reader.delivery_id),
        )

    def preview(
        self, reader: Reader, posts: Sequence[PostView], links: Mapping[str, str]
    ) -> Rendered:
        """The message ``reader`` would get, with ``links`` (``unsubscribe_url``,
        ``preferences_url``) put where each reader's own links go: a preview names no reader."""
        return self._body(reader, posts).fill(links).rendered

    def _body(self, reader: Reader, posts: Sequence[PostView]) -> PreparedMessage:
        followed = tuple(sorted(reader.tag_ids, key=lambda t: self.tags.get(t, ("", ""))[0]))
        key = _BodyKey(self.template, reader.timezone, tuple(p.id for p in posts), followed)
        body = self._bodies.get(key)
        if body is not None:
            self._bodies.move_to_end(key)
            return body
        shown = tuple(posts[:MAX_ITEMS])
        tz = zone(key.timezone)
        times = tuple(_local_time(p.when, tz) for p in shown)
        layout_key: _LayoutKey = (
            key.template,
            self.settings.display_name,
            self.settings.base_url,
            self._title(),
            tuple((t, *self.tags[t]) for t in followed),
            shown,
            len(posts),
            self.edition.subject,
        )
        body = self._by_times.get((layout_key, times))
        if body is None:
            body = self._filled(layout_key, times)
            if len(self._by_times) >= _CACHE_SIZE:
                self._by_times.clear()
            self._by_times[layout_key, times] = body
        self._bodies[key] = body
        if len(self._bodies) > _CACHE_SIZE:
            self._bodies.popitem(last=False)
        return body

    def _filled(self, key: _LayoutKey, times: tuple[str, ...]) -> PreparedMessage:
        """The body for ``times``: the layout with the times put in, when that gives the same
        as a render with them."""
        template = key[0]
        if _checked.get(template) is False or not all(_PLAIN.fullmatch(t) for t in times):
            return self._prepare(self._render(key, times))
        values = dict(zip(_TIMES, times, strict=False))
        values["archive_url"] = self._archive_url(key)
        body = self._layout(key).fill(values)
        if template not in _checked:  # once per template and process
            direct = self._render(key, times)
            _checked[template] = body.rendered == direct
            if not _checked[template]:
                with _layouts_lock:
                    _layouts.clear()
                self._layouts.clear()
                return self._prepare(direct)
        return body

    def _layout(self, key: _LayoutKey) -> PreparedMessage:
        prepared = self._layouts.get(key)
        if prepared is not None:
            return prepared
        with _layouts_lock:
            packed = _layouts.get(key)
            if packed is not None:
                _layouts.move_to_end(key)
        if packed is not None:
            body = packed.unpack()
        else:
            slots = _TIME_SLOTS[: len(key[5])]
            body = EncodedBody.encode(self._render(key, slots, slot("archive_url")))
            with _layouts_lock:
                _layouts[key] = body.pack()
                if len(_layouts) > LAYOUT_CACHE:
                    _layouts.popitem(last=False)
        prepared = self._layouts[key] = self._prepare(body)
        if len(self._layouts) > _CACHE_SIZE:
            self._layouts.clear()
        return prepared

    def _render(
        self, key: _LayoutKey, times: tuple[str, ...], archive_url: str | None = None
    ) -> Rendered:
        """A full render; ``archive_url`` defaults to this edition's (a layout passes a slot)."""
        self.renders += 1
        template, site, base, title, followed, shown, total, subject = key
        views = {p.id: _item(p, time) for p, time in zip(shown, times, strict=True)}
        groups: list[dict[str, Any]] = []
        placed: set[int] = set()
        for tag_id, name, _slug in followed:  # a post in two followed tags: under the first
            items = [views[p.id] for p in shown if tag_id in p.tag_ids and p.id not in placed]
            placed.update(p.id for p in shown if tag_id in p.tag_ids)
            if items:
                groups.append({"name": name, "posts": items})
        first_tag = followed[0][2] if followed else ""
        context: dict[str, Any] = {
            "site_name": site,
            "base_url": base,
            "schedule_title": title,
            "subject": subject,  # an editor's own subject line (breaking news), else None
            "total": total,
            "headlines": [views[p.id] for p in shown[:HEADLINES]],
            "groups": groups,
            "tag_names": [name for _id, name, _slug in followed],
            "more_count": max(0, total - MAX_ITEMS),
            "more_url": f"{base}/archive/{first_tag}" if first_tag else base,
            "archive_url": archive_url or self._archive_url(key),
            "unsubscribe_url": slot("unsubscribe_url"),
            "preferences_url": slot("preferences_url"),
        }
        return render(template, context)

    def _archive_url(self, key: _LayoutKey) -> str:
        """The edition's public page showing the followed tags: the same for every reader of
        the layout (the tags are part of its key), and nothing personal in it."""
        url = f"{self.settings.base_url}/archive/editions/{self.edition.id}"
        slugs = ",".join(quote(slug, safe="") for _id, _name, slug in key[4])
        return f"{url}?tags={slugs}" if slugs else url

    def _prepare(self, rendered: Rendered | EncodedBody) -> PreparedMessage:
        site = self.settings.display_name
        list_name = self.schedule.name if self.schedule is not None else str(self.edition.kind)
        return prepare(
            rendered,
            mail_from=self.settings.mail_from,
            list_id=f"{site} {self._title()} <{list_name}.{self.settings.public_host}>",
            feedback_id=f"{list_name}:{self.edition.kind}:newsletter",
            date=self.now,
        )

    def _title(self) -> str:
        if self.schedule is not None:
            return f"{self.schedule.cadence} digest"
        return "news alert" if self.edition.kind == EditionKind.INSTANT else "breaking news"


def _local_time(when: datetime, tz: tzinfo) -> str:
    local = when.astimezone(tz)
    return local.strftime("%a %d %b, %H:%M ") + (local.tzname() or "")


def _item(post: PostView, time: str) -> dict[str, Any]:
    return {
        "title": post.title,
        "url": post.url,
        "excerpt": post.excerpt,
        "author": post.author,
        "time": time,
    }
