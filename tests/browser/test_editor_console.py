"""An editor's breaking-news send in a real browser, against the real API and worker processes.

Chromium (Debian's, driven by Playwright) signs in to the console with an editor token made by
`newsletter tokens create`, previews a post as breaking news (how many readers, the HTML and
text parts), sends it, and watches the edition page count up to 100% while the worker mails
every reader through a real SMTP server. Screenshots go to `test-output/screenshots/`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import Inbox, admin_token, running_services, shot
from tests.processes import wait_for

pytestmark = [pytest.mark.process, pytest.mark.smtp]

READERS = 120

# A fictional portal: two tags, one breaking post, readers of either tag (a few with alerts off,
# one suppressed), and readers of a third tag who must not get it.
SEED = f"""
import hashlib
from service.db import session_scope
from service.models import (Cadence, Post, Subscriber, SubscriberStatus, Subscription,
                            Suppression, Tag)
with session_scope() as session:
    tags = {{slug: Tag(slug=slug, name=name) for slug, name in
            [("harbour", "Harbour"), ("council", "City council"), ("sport", "Sport")]}}
    session.add_all(tags.values())
    session.add(Post(url="https://courier.example/ferry-strike", guid="ferry-strike",
                     title="Ferry crews walk out at dawn",
                     summary_html="<p>All crossings stop.</p>",
                     content_hash="f" * 64, tags=[tags["harbour"], tags["council"]]))
    for n in range({READERS} + 10):
        slug = "sport" if n >= {READERS} else ("harbour", "council")[n % 2]
        reader = Subscriber(email=f"reader{{n}}@example.net", status=SubscriberStatus.ACTIVE,
                            timezone="Europe/Lisbon", breaking_alerts=n % 10 != 9)
        reader.subscriptions.append(Subscription(tag=tags[slug], cadence=Cadence.DAILY))
        session.add(reader)
    email = "reader0@example.net"
    session.add(Suppression(email=email, email_hash=hashlib.sha256(email.encode()).hexdigest(),
                            reason="complaint", source="test"))
"""
EXPECTED = sum(1 for n in range(READERS) if n % 10 != 9) - 1  # alerts on, less the suppressed


@pytest.fixture
def console(var_dir: Path, tmp_path: Path, inbox: tuple[Inbox, int]) -> Iterator[tuple[str, str]]:
    """API and worker on SQLite and the embedded broker; yields the base URL and a token."""
    with running_services(var_dir, tmp_path / "services.log", inbox[1], SEED) as (base_url, env):
        yield base_url, admin_token(env, "night-desk", "editor")


def test_an_editor_previews_sends_and_watches_a_breaking_edition(
    console: tuple[str, str], browser: Browser, inbox: tuple[Inbox, int]
) -> None:
    (base_url, token), (mailbox, _) = console, inbox
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()

    page.goto(f"{base_url}/admin/breaking")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to the console")
    page.get_by_label("Admin token").fill(token)
    shot(page, "console-01-sign-in")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Breaking news")

    page.get_by_label("Post").fill("https://courier.example/ferry-strike")
    page.get_by_label("Subject (optional)").fill("Breaking: ferries stop at dawn")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#reach b")).to_have_text(str(EXPECTED))
    frame = page.frame_locator("iframe[title='HTML part']")
    expect(frame.get_by_text("Ferry crews walk out at dawn").first).to_be_visible()
    expect(page.get_by_label("Text part")).to_contain_text("Ferry crews walk out at dawn")
    shot(page, "console-02-breaking-preview")
    assert mailbox.messages == []  # a preview sends nothing

    page.get_by_role("button", name=f"Send to {EXPECTED} readers now").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Breaking: ferries stop at dawn")
    shot(page, "console-03-edition-sending")
    # The page updates itself while the worker sends: no reload here.
    expect(page.locator("#percent")).to_have_text("100%", timeout=60_000)
    expect(page.locator("#n-sent")).to_have_text(str(EXPECTED))
    expect(page.locator("#status")).to_have_text("done")
    expect(page.locator("#started")).to_contain_text("UTC")
    shot(page, "console-04-edition-done")

    wait_for(lambda: len(mailbox.messages) >= EXPECTED, 30, "every breaking mail")
    recipients = [m["To"] for m in mailbox.messages]
    assert len(recipients) == len(set(recipients)) == EXPECTED
    assert "reader0@example.net" not in recipients  # suppressed
    assert all(m["Subject"] == "Breaking: ferries stop at dawn" for m in mailbox.messages)
