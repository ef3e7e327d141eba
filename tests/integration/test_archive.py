"""The public archive on SQLite and PostgreSQL, from editions really sent (recording sender).

A reader opens "View in browser" in each kind of mail and gets the edition's page; nothing on
any archive page names a reader or carries a reader's token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from service.config import Settings
from service.digests import archive, planning, schedules
from service.digests.sending import send_batch
from service.mail import OutgoingMessage, Sender
from service.mail.outbox_view import list_messages, open_message
from service.mail.senders.outbox import OutboxSender
from service.models import Cadence, Edition, Tag
from service.web.app import create_app
from tests.digest_data import RecordingSender, post, reader, tag

Sessions = Callable[[], Session]
NOW = datetime(2026, 3, 28, 22, 30, tzinfo=UTC)  # 07:30 on Sunday in Tokyo
BASE = "https://courier.example"
VIEW = re.compile(r"View in browser: (\S+)")


@pytest.fixture
def settings() -> Settings:
    return Settings(
        _env_file=None,
        secret_key="test-secret-key-0123456789abcdef",
        base_url=BASE,
        mail_from="The Harbour Courier <news@courier.example>",
    )


class Sent:
    """Plans with the real planner and sends every batch through a recording sender."""

    def __init__(
        self, sessions: Sessions, settings: Settings, outbox: OutboxSender | None = None
    ) -> None:
        self.sessions, self.settings = sessions, settings
        self.sender = RecordingSender()
        self.outbox = outbox
        self.batches: list[tuple[int, list[int]]] = []

    def dispatch(self, edition_id: int, ids: Sequence[int]) -> None:
        self.batches.append((edition_id, list(ids)))

    def send(self, now: datetime = NOW) -> list[OutgoingMessage]:
        before = len(self.sender.sent)
        batches, self.batches = self.batches, []
        for edition_id, ids in batches:
            sender: Sender = self.outbox or self.sender
            send_batch(self.sessions, sender, self.settings, edition_id, ids, now=now)
        return self.sender.sent[before:]

    def digest(self, now: datetime = NOW) -> list[OutgoingMessage]:
        with self.sessions() as s:
            planning.plan_digests(s, self.dispatch, now)
        return self.send(now)

    def breaking(self, post_id: int) -> list[OutgoingMessage]:
        with self.sessions() as s:
            planning.plan_breaking(s, post_id, self.dispatch)
        return self.send(NOW - timedelta(minutes=30))

    def instant(self, post_ids: list[int]) -> list[OutgoingMessage]:
        with self.sessions() as s:
            planning.plan_instant(s, post_ids, self.dispatch)
        return self.send(NOW - timedelta(minutes=20))


@dataclass
class World:
    port_post: int
    weather_post: int
    quiet_tag: str = "market"


@pytest.fixture(autouse=True)
def fresh_memo() -> Iterator[None]:
    archive._memo.clear()  # ids repeat across tests' databases
    yield
    archive._memo.clear()


@pytest.fixture(params=["sampled", "exact"])
def probe(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The listing's two probes: the sample of deliveries, or (sample of none) the exact one."""
    if request.param == "exact":
        monkeypatch.setattr(archive, "SAMPLE", 0)
    return str(request.param)


@pytest.fixture
def sent(sessions: Sessions, settings: Settings) -> Sent:
    return Sent(sessions, settings)


@pytest.fixture
def client(engine: Engine, settings: Settings) -> TestClient:
    return TestClient(create_app(settings, engine), raise_server_exceptions=False)


@pytest.fixture
def world(sent: Sent) -> World:
    """Readers in Tokyo, a daily schedule, and posts on port and weather (market: none)."""
    with sent.sessions() as s:
        schedules.add_schedule(s, "morning", Cadence.DAILY, at=time(7, 0))
        port, weather, market = tag(s, "port"), tag(s, "weather"), tag(s, "market")
        both = {port: Cadence.DAILY, weather: Cadence.DAILY}
        reader(s, "ada.lovelace@example.com", both, timezone="Asia/Tokyo")
        reader(s, "grace.hopper@example.com", both, timezone="Asia/Tokyo")
        reader(s, "instant.ian@example.com", {port: Cadence.INSTANT}, timezone="Asia/Tokyo")
        reader(s, "market.mo@example.com", {market: Cadence.WEEKLY}, timezone="Asia/Tokyo")
        p = post(s, "Crane strike ends", [port], published=NOW - timedelta(hours=3))
        w = post(s, "Fog over the bay", [weather], published=NOW - timedelta(hours=2))
        post(s, "Old harbour news", [port], published=NOW - timedelta(days=3))
        s.commit()
        return World(p.id, w.id)


def parse(data: bytes) -> EmailMessage:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parts(message: OutgoingMessage) -> tuple[str, str]:
    msg = parse(message.data)
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None
    assert html is not None
    return str(text.get_content()), str(html.get_content())


def view_link(message: OutgoingMessage) -> str:
    """The "View in browser" URL, the same in both parts."""
    text, html = parts(message)
    found = VIEW.search(text)
    assert found, text
    url = found.group(1)
    assert re.search(f'href="{re.escape(url)}"[^>]*>View in browser</a>', html), html
    assert url.startswith(BASE)
    return url.removeprefix(BASE)


def personal_bits(messages: Sequence[OutgoingMessage]) -> set[str]:
    """Every reader's address, name part and signed link token found in the mails."""
    bits: set[str] = set()
    for m in messages:
        bits |= {m.recipient, m.recipient.split("@")[0]}
        text, _ = parts(m)
        bits |= set(re.findall(r"/(?:unsubscribe|preferences)/([\w.-]+)", text))
    return bits


def assert_public(html: str, messages: Sequence[OutgoingMessage]) -> None:
    assert "/unsubscribe/" not in html
    assert "/preferences/" not in html
    for bit in personal_bits(messages):
        assert bit not in html, bit


def test_a_sent_digest_is_in_each_tags_archive_without_anyones_links(
    sent: Sent, world: World, client: TestClient, probe: str
) -> None:
    mails = sent.digest()
    assert sorted(m.recipient for m in mails) == [
        "ada.lovelace@example.com",
        "grace.hopper@example.com",
    ]
    listing = client.get("/archive/port")
    assert listing.status_code == 200
    (href,) = re.findall(r'href="(/archive/port/\d+)"', listing.text)
    assert "Daily digest" in listing.text

    page = client.get(href)
    assert page.status_code == 200
    assert "Crane strike ends" in page.text
    assert "https://courier.example/crane-strike-ends" in page.text
    assert "Old harbour news" not in page.text  # before the window: it was not sent
    assert "Fog over the bay" not in page.text  # another tag's post
    for html in (listing.text, page.text, client.get("/archive/weather").text):
        assert_public(html, mails)
    weather = client.get("/archive/weather")
    (weather_href,) = re.findall(r'href="(/archive/weather/\d+)"', weather.text)
    assert "Fog over the bay" in client.get(weather_href).text


def test_view_in_browser_in_a_digest_opens_the_readers_tags_of_that_edition(
    sent: Sent, world: World, client: TestClient
) -> None:
    mails = sent.digest()
    links = {view_link(m) for m in mails}
    assert len(links) == 1  # the same link for every reader of this layout
    (link,) = links
    with sent.sessions() as s:
        edition_id = s.scalars(select(Edition.id)).one()
    assert link == f"/archive/editions/{edition_id}?tags=port,weather"
    page = client.get(link)
    assert page.status_code == 200
    assert page.text.index("Crane strike ends") < page.text.index("Fog over the bay")
    assert_public(page.text, mails)
    # The edition without a filter: every tag it carried, by name.
    assert client.get(f"/archive/editions/{edition_id}").status_code == 200


def test_view_in_browser_in_breaking_and_instant_mail(
    sent: Sent, world: World, client: TestClient, probe: str
) -> None:
    alerts = sent.breaking(world.port_post)
    assert len(alerts) == 3  # everyone following port, at any cadence
    with sent.sessions() as s:
        edition_id = s.scalars(select(Edition.id)).one()
    # One link per followed tag set (a layout), never one per reader.
    assert {view_link(m) for m in alerts} == {
        f"/archive/editions/{edition_id}?tags=port,weather",
        f"/archive/editions/{edition_id}?tags=port",
    }
    for m in alerts:
        page = client.get(view_link(m))
        assert page.status_code == 200
        assert "Breaking: Crane strike ends" in page.text
        assert_public(page.text, alerts)

    with sent.sessions() as s:
        fresh = post(s, "Pilot boat launched", [tag_of(s, "port")], published=NOW)
        s.commit()
        fresh_id = fresh.id
    news = sent.instant([fresh_id])
    assert [m.recipient for m in news] == ["instant.ian@example.com"]
    page = client.get(view_link(news[0]))
    assert page.status_code == 200
    assert "Pilot boat launched" in page.text
    assert "News alert" in page.text
    assert_public(page.text, [*alerts, *news])
    # Both are in the port archive, newest first.
    listing = client.get("/archive/port").text
    assert listing.index("News alert") < listing.index("Breaking: Crane strike ends")


def tag_of(session: Session, slug: str) -> Tag:
    return session.scalars(select(Tag).where(Tag.slug == slug)).one()


def test_unknown_tags_editions_of_other_tags_and_unsent_editions_are_404(
    sent: Sent, world: World, client: TestClient, probe: str
) -> None:
    sent.digest()
    with sent.sessions() as s:
        digest_id = s.scalars(select(Edition.id)).one()
        # Planned, never sent: the breaking edition of the weather post with its batch dropped.
        planning.plan_breaking(s, world.weather_post, lambda e, ids: None)
        unsent_id = s.scalars(select(Edition.id).where(Edition.id != digest_id)).one()
    assert client.get("/archive/nope").status_code == 404
    assert client.get(f"/archive/nope/{digest_id}").status_code == 404
    assert client.get(f"/archive/market/{digest_id}").status_code == 404  # not of that tag
    assert client.get(f"/archive/weather/{unsent_id}").status_code == 404
    assert client.get(f"/archive/editions/{unsent_id}").status_code == 404
    assert client.get("/archive/editions/999999").status_code == 404
    for bad in ("abc", "-1", "1e3", "%2e%2e", "99999999999999999999999"):
        assert client.get(f"/archive/port/{bad}").status_code == 404, bad
    missing = client.get("/archive/nope", headers={"accept": "text/html"})
    assert "text/html" in missing.headers["content-type"]
    # A known tag with nothing sent yet is an empty archive, not an error.
    empty = client.get("/archive/market")
    assert empty.status_code == 200
    assert "Nothing has been sent on this topic yet" in empty.text


def test_pages_are_cacheable_and_answer_304(sent: Sent, world: World, client: TestClient) -> None:
    mails = sent.digest()
    link = view_link(mails[0])
    for url in (link, "/archive/port"):
        first = client.get(url)
        assert first.headers["cache-control"].startswith("public, max-age=")
        again = client.get(url, headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""
    assert (
        client.get("/archive/port").headers["etag"] == client.get("/archive/port").headers["etag"]
    )


def test_the_tag_archive_pages_newest_first(
    sent: Sent, sessions: Sessions, client: TestClient
) -> None:
    with sessions() as s:
        port = tag(s, "port")
        reader(s, "pat@example.com", {port: Cadence.DAILY})
        ids = [
            post(s, f"Tide report {n}", [port], published=NOW - timedelta(hours=n)).id
            for n in range(archive.PAGE_SIZE + 3)
        ]
        s.commit()
    for post_id in ids:
        assert len(sent.breaking(post_id)) == 1
    first = client.get("/archive/port")
    titles = re.findall(r">Breaking: (Tide report \d+)<", first.text)
    assert len(titles) == archive.PAGE_SIZE
    assert titles[0] == f"Tide report {len(ids) - 1}"  # the last sent comes first
    (older,) = re.findall(r'href="(/archive/port\?before=\d+)"', first.text)
    second = client.get(older)
    rest = re.findall(r">Breaking: (Tide report \d+)<", second.text)
    assert rest == ["Tide report 2", "Tide report 1", "Tide report 0"]
    assert "?before=" not in second.text  # the last page
    assert client.get("/archive/port?before=abc").status_code == 422


def test_a_digest_sent_through_the_outbox_links_its_page(
    sessions: Sessions, settings: Settings, world: World, client: TestClient, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    Sent(sessions, settings, OutboxSender(outbox)).digest()
    listed = list_messages(outbox)
    assert sorted(m.to for m in listed) == ["ada.lovelace@example.com", "grace.hopper@example.com"]
    for summary in listed:
        view = open_message(outbox, summary.id)
        assert view.html is not None
        assert view.text is not None
        (url,) = VIEW.findall(view.text)
        assert f'href="{url}"' in view.html
        page = client.get(url.removeprefix(BASE))
        assert page.status_code == 200
        assert "Crane strike ends" in page.text
        assert summary.to not in page.text


def test_the_subscribe_page_links_each_tags_archive(world: World, client: TestClient) -> None:
    page = client.get("/subscribe").text
    assert 'href="/archive/port"' in page
    assert 'href="/archive/weather"' in page
