"""What the browser tests share: Debian's chromium under Playwright, a real SMTP inbox
(aiosmtpd in the test process), and screenshots under `test-output/screenshots/`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import service_unavailable
from tests.processes import PYTHON, free_port, service_env, start, start_worker, stop, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"


class Inbox:
    """aiosmtpd handler keeping every message that arrives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.original_content is not None
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    def wait_for_mail(self, timeout: float = 30.0) -> EmailMessage:
        wait_for(lambda: bool(self.messages), timeout, "the confirmation mail")
        return self.messages[0]


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        service_unavailable("chromium", f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@contextmanager
def running_services(
    var_dir: Path, log: Path, smtp_port: int, seed: str
) -> Iterator[tuple[str, dict[str, str]]]:
    """API and worker as deployed, on SQLite and the embedded broker, mailing through the
    SMTP server on ``smtp_port``; ``seed`` (Python) runs first. Yields the base URL and env."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = service_env(
        var_dir,
        mail_backend="smtp",
        smtp_url=f"smtp://127.0.0.1:{smtp_port}?starttls=off",
        base_url=base_url,
    )
    for argv in ([PYTHON, "-m", "service", "db", "upgrade"], [PYTHON, "-c", seed]):
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=60)
    api = start(
        [PYTHON, "-m", "service", "api", "--port", str(port), "--host", "127.0.0.1"], env, log
    )
    try:
        wait_for(lambda: answers(f"{base_url}/healthz"), 20, "the API", log)
        worker = start_worker(env, log)
        try:
            yield base_url, env
        finally:
            stop(worker)
    finally:
        stop(api)


def admin_token(env: dict[str, str], name: str, role: str) -> str:
    """A token made as an operator makes one: `newsletter tokens create NAME --role ROLE`."""
    made = subprocess.run(
        [PYTHON, "-m", "service", "tokens", "create", name, "--role", role],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return next(w for w in made.stdout.split() if w.startswith("nl_"))
