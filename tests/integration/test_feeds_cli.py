"""`newsletter sources add`, `sources list` and `poll`, as an operator runs them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.feed_server import FeedServer, answer
from tests.processes import run_cli, service_env

FEED = (
    Path(__file__).resolve().parents[1] / "fixtures" / "feeds" / "rss20_wordpress.xml"
).read_bytes()


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        running.routes["/tag/transport/feed/"] = answer(200, FEED, {"ETag": '"1"'})
        running.routes["/tag/broken/feed/"] = answer(500, b"down")
        yield running


@pytest.mark.process
def test_add_list_and_poll(server: FeedServer, var_dir: Path) -> None:
    env = service_env(var_dir)
    added = run_cli(env, "sources", "add", server.url("/tag/transport/feed/"), "--tag", "transport")
    assert added.returncode == 0, added.stderr
    assert "source 1" in added.stdout
    refused = run_cli(env, "sources", "add", server.url("/tag/broken/feed/"), "--tag", "broken")
    assert refused.returncode == 1
    assert "not added" in refused.stderr

    first = run_cli(env, "poll")
    assert first.returncode == 0, first.stderr
    assert "3 new, 0 updated" in first.stdout
    second = run_cli(env, "poll", "--source", "1")
    # This server ignores validators; the same bytes are recognised and not parsed again.
    assert "unchanged" in second.stdout
    assert server.seen("/tag/transport/feed/").headers.get("if-none-match") == '"1"'

    listing = run_cli(env, "sources", "list")
    assert "transport" in listing.stdout
    assert "unchanged" in listing.stdout
