"""An operator runs the service from the console in a real browser: adds a feed and polls it,
adds a digest schedule, imports readers from a CSV file (with the report of the bad rows),
looks a reader up, suppresses an address and lifts it. Against the real API and worker
processes; screenshots go to `test-output/screenshots/`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import Inbox, admin_token, running_services, shot
from tests.feed_server import FeedServer, answer

pytestmark = [pytest.mark.process, pytest.mark.smtp]

SEED = """
from service.db import session_scope
from service.models import Tag
with session_scope() as session:
    session.add_all([Tag(slug="harbour", name="Harbour"), Tag(slug="council", name="City council")])
"""

RSS = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>Harbour desk</title>'
    b"<link>https://courier.example/harbour/</link>"
    b"<item><title>Night ferry returns</title><link>https://courier.example/night-ferry</link>"
    b"<guid>night-ferry</guid><pubDate>Fri, 27 Nov 2026 06:00:00 GMT</pubDate></item>"
    b"</channel></rss>"
)

CSV = """email,tags,cadence,timezone,send_hour,consented_at
skipper@example.net,harbour;council,daily;weekly,Europe/Lisbon,7,2026-10-01T09:00:00Z
pilot@example.net,harbour,instant,UTC,,2026-10-02T09:00:00Z
not an address,harbour,daily,UTC,,
"""


@pytest.fixture
def desk(var_dir: Path, tmp_path: Path, inbox: tuple[Inbox, int]) -> Iterator[tuple[str, str]]:
    with running_services(var_dir, tmp_path / "services.log", inbox[1], SEED) as (base_url, env):
        yield base_url, admin_token(env, "ops-desk", "operator")


def sign_in(page: Page, base_url: str, token: str, where: str) -> None:
    page.goto(f"{base_url}{where}")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def test_an_operator_runs_sources_schedules_readers_and_suppressions(
    desk: tuple[str, str], browser: Browser, tmp_path: Path
) -> None:
    base_url, token = desk
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()

    with FeedServer() as feeds:
        feeds.routes["/harbour/feed/"] = answer(200, RSS, {"Content-Type": "application/rss+xml"})
        sign_in(page, base_url, token, "/admin/sources")
        page.get_by_label("Feed or page address").fill(feeds.url("/harbour/feed/"))
        page.get_by_label("Tags").fill("harbour")
        page.get_by_role("button", name="Add source").click()
        expect(page.get_by_role("status")).to_have_text("Added.")
        page.get_by_role("button", name="Poll now").click()
        expect(page.get_by_role("status")).to_contain_text("Poll queued")
        # The worker polls it: the row's "last polled" turns from "never" into a time.
        for _ in range(30):
            if "never" not in page.locator("tbody tr").first.inner_text():
                break
            page.wait_for_timeout(500)
            page.reload()
        expect(page.locator("tbody tr").first).to_contain_text("UTC")
        shot(page, "console-05-sources")

    page.goto(f"{base_url}/admin/schedules")
    page.get_by_label("Name").fill("morning")
    page.get_by_label("Default time").fill("06:30")
    page.get_by_role("button", name="Add schedule").click()
    expect(page.locator("tbody")).to_contain_text("morning")
    expect(page.locator("tbody")).to_contain_text("06:30")
    shot(page, "console-06-schedules")

    csv = tmp_path / "readers.csv"
    csv.write_text(CSV)
    page.goto(f"{base_url}/admin/subscribers")
    page.get_by_label("CSV file").set_input_files(str(csv))
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_role("status")).to_contain_text("2 imported active")
    expect(page.get_by_role("status")).to_contain_text("1 rejected")
    expect(page.locator("table").last).to_contain_text("not an address")
    shot(page, "console-07-import")
    page.get_by_label("Find a reader by address").fill("Skipper@example.net")
    page.get_by_role("button", name="Find").click()
    expect(page.locator("main")).to_contain_text("Europe/Lisbon")
    expect(page.locator("main")).to_contain_text("weekly")

    page.goto(f"{base_url}/admin/suppressions")
    page.get_by_label("Address", exact=True).fill("pilot@example.net")
    page.get_by_label("Note").fill("asked by phone to stop")
    page.get_by_role("button", name="Suppress").click()
    expect(page.get_by_role("status")).to_contain_text("nothing more goes to it")
    in_force, lifted = page.locator("tbody").first, page.locator("tbody").last
    expect(in_force).to_contain_text("asked by phone to stop")
    shot(page, "console-08-suppressions")
    page.get_by_label("Why").fill("called back: wants the digest again")
    page.get_by_role("button", name="Lift").click()
    expect(page.get_by_role("status")).to_contain_text("Suppression lifted")
    expect(in_force).not_to_contain_text("pilot@example.net")
    expect(lifted).to_contain_text("called back: wants the digest again")
