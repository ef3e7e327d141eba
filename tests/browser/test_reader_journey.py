"""A reader's whole journey in a real browser, against the real API and worker processes.

Chromium (Debian's, driven by Playwright) subscribes through the form; the worker mails the
confirmation through a real SMTP server (aiosmtpd in this process); the browser opens the link
from the mail, confirms, changes preferences and unsubscribes. A screenshot of every page goes
to `test-output/screenshots/`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from service.config import Settings
from service.db import make_engine
from service.models import Cadence, Subscriber, SubscriberStatus
from service.readers.tokens import Purpose, TokenData, Tokens
from tests.browser.conftest import Inbox, running_services, shot

pytestmark = [pytest.mark.process, pytest.mark.smtp]

READER = "journey.reader@example.com"

# Run in a child process with the services' environment: the tags a news site would have.
SEED = """
from service.db import session_scope
from service.models import Post, Tag
with session_scope() as session:
    tags = {slug: Tag(slug=slug, name=name) for slug, name in
            [("world", "World"), ("economy", "Economy"), ("science", "Science")]}
    for n, slugs in enumerate([["world"], ["world", "economy"], ["science"], ["world"]]):
        url = f"https://news.example.org/{n}"
        session.add(Post(url=url, guid=url, title=f"Post {n}", content_hash=f"{n:064d}",
                         tags=[tags[s] for s in slugs]))
"""


@pytest.fixture
def services(var_dir: Path, tmp_path: Path, inbox: tuple[Inbox, int]) -> Iterator[str]:
    """API and worker as deployed, on SQLite and the embedded broker; yields the base URL."""
    with running_services(var_dir, tmp_path / "services.log", inbox[1], SEED) as (base_url, _):
        yield base_url


def reader_in_db(var_dir: Path) -> Subscriber:
    engine = make_engine(f"sqlite:///{var_dir / 'newsletter.db'}")
    try:
        with DbSession(engine, expire_on_commit=False) as session:
            reader = session.scalars(select(Subscriber).where(Subscriber.email == READER)).one()
            _ = [(s.tag.slug, s.cadence) for s in reader.subscriptions]  # load while open
            return reader
    finally:
        engine.dispose()


def test_a_reader_subscribes_confirms_changes_preferences_and_unsubscribes(
    services: str, browser: Browser, inbox: tuple[Inbox, int], var_dir: Path
) -> None:
    base_url, (mailbox, _) = services, inbox
    context = browser.new_context(
        timezone_id="Europe/Berlin", viewport={"width": 1024, "height": 800}
    )
    page = context.new_page()

    # Subscribe: two tags at different cadences, a zone and an hour.
    page.goto(f"{base_url}/subscribe")
    expect(page.get_by_label("Time zone")).to_have_value("Europe/Berlin")  # the browser's zone
    page.get_by_label("Email address").fill(READER)
    page.get_by_label("World (3 posts)").check()
    page.get_by_label("How often: World").select_option("instant")
    page.get_by_label("Economy (1 post)").check()
    page.get_by_label("How often: Economy").select_option("weekly")
    page.get_by_label("Time zone").select_option("Asia/Tokyo")
    page.get_by_label("Hour of the day").select_option("7")
    shot(page, "01-subscribe")
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")
    shot(page, "02-check-inbox")

    # The confirmation mail, through the worker and a real SMTP server.
    mail = mailbox.wait_for_mail()
    assert mail["To"] == READER
    text = mail.get_body(preferencelist=("plain",))
    assert text is not None
    link = re.search(r"http://\S+/confirm/\S+", text.get_content())
    assert link, text.get_content()
    page.goto(link.group(0))
    shot(page, "03-confirm")
    assert reader_in_db(var_dir).status == SubscriberStatus.PENDING  # opening is not confirming
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You're subscribed")
    shot(page, "04-subscribed")
    reader = reader_in_db(var_dir)
    assert reader.status == SubscriberStatus.ACTIVE
    assert (reader.timezone, reader.send_hour) == ("Asia/Tokyo", 7)

    # Preferences: World becomes a daily digest, the hour moves to the evening.
    page.get_by_role("link", name="Your preferences").click()
    expect(page.get_by_label("World")).to_have_value("instant")
    page.get_by_label("World").select_option("daily")
    page.get_by_label("Hour of the day").select_option("18")
    page.get_by_role("button", name="Save preferences").click()
    expect(page.get_by_role("status")).to_contain_text("Saved")
    shot(page, "05-preferences-saved")
    reader = reader_in_db(var_dir)
    assert {s.tag.slug: s.cadence for s in reader.subscriptions} == {
        "world": Cadence.DAILY,
        "economy": Cadence.WEEKLY,
    }
    assert reader.send_hour == 18

    # Unsubscribe through a World newsletter's link: the page offers World or everything.
    tokens = Tokens(Settings(var_dir=var_dir, base_url=base_url))
    token = tokens.make(Purpose.UNSUBSCRIBE, TokenData(reader.id, scope="world"))
    page.goto(f"{base_url}/unsubscribe/{token}")
    expect(page.get_by_role("button", name="Unsubscribe from World")).to_be_visible()
    shot(page, "06-unsubscribe")
    page.get_by_role("button", name="Unsubscribe from everything").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are unsubscribed")
    shot(page, "07-unsubscribed")

    reader = reader_in_db(var_dir)
    assert reader.status == SubscriberStatus.UNSUBSCRIBED
    assert reader.subscriptions == []
    assert len(mailbox.messages) == 1  # only the confirmation: nothing sent after unsubscribing
    context.close()

    check_phone_layout(browser, base_url)


def check_phone_layout(browser: Browser, base_url: str) -> None:
    """The subscribe form on a 390px-wide phone: nothing wider than the screen."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.goto(f"{base_url}/subscribe")
    shot(page, "08-subscribe-phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    button = page.get_by_role("button", name="Subscribe").bounding_box()
    assert button is not None
    assert 0 <= button["x"] <= button["x"] + button["width"] <= 390
    context.close()
