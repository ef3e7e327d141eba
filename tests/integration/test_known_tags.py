"""The subscribe path's tag check (`KnownTags`): a new tag works at once, an unknown one is
refused, a deleted one is forgotten after the cache's lifetime, and known tags cost no query."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import delete, event
from sqlalchemy.orm import Session

from service.models import Tag
from service.readers.accounts import KnownTags, ReaderError
from tests.digest_data import tag


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_new_unknown_and_deleted_tags(sessions: Callable[[], Session]) -> None:
    clock = Clock()
    known = KnownTags(ttl=30, clock=clock)
    with sessions() as s:
        tag(s, "city")
        s.commit()
        known.check(s, ["city"])
        with pytest.raises(ReaderError, match="unknown tags: harbour"):
            known.check(s, ["city", "harbour"])
        tag(s, "harbour")  # created after a refusal: usable at once
        s.commit()
        known.check(s, ["city", "harbour"])

        s.execute(delete(Tag).where(Tag.slug == "harbour"))
        s.commit()
        clock.now += 31  # past the cache's lifetime: the deleted tag is looked up again
        with pytest.raises(ReaderError, match="unknown tags: harbour"):
            known.check(s, ["harbour"])


def test_known_tags_are_checked_without_a_query(sessions: Callable[[], Session]) -> None:
    known = KnownTags(ttl=30, clock=Clock())
    with sessions() as s:
        tag(s, "city")
        s.commit()
        known.check(s, ["city"])
        statements: list[str] = []
        bind = s.get_bind()
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(bind, "before_cursor_execute", listener)
        try:
            for _ in range(5):
                known.check(s, ["city"])
        finally:
            event.remove(bind, "before_cursor_execute", listener)
    assert statements == []
