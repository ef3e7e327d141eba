"""`newsletter up` as a newcomer runs it: no server configured, one command, Ctrl-C to stop."""

from __future__ import annotations

import email
import email.policy
import re
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from service.config import Settings
from service.readers.tokens import Purpose, TokenData, Tokens
from tests.processes import (
    PYTHON,
    free_port,
    processes_with_env,
    service_env,
    start,
    stop,
    wait_for,
)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.process
@pytest.mark.embedded_broker
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_up_serves_and_stops_with_all_its_children(
    var_dir: Path, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    log = tmp_path / "up.log"
    env = service_env(var_dir)  # no database, broker or mail settings: the embedded defaults
    up = start([PYTHON, "-m", "service", "up", "--port", str(port)], env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{base}/healthz"), 15, "/healthz", log)
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"]["detail"] == "sqlite"
        assert (var_dir / "newsletter.db").exists()  # `up` ran the migrations itself
        output = log.read_text()
        assert f"http://localhost:{port}/" in output  # it told the user where to go
        # api, worker, beat, and the worker's pool: all carry this test's VAR_DIR.
        assert len(processes_with_env(str(var_dir))) >= 4

        up.send_signal(stop_signal)  # what Ctrl-C or a service manager does
        assert up.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        stop(up)
    wait_for(lambda: not processes_with_env(str(var_dir)), 10, "every child to exit", log)
    assert not _answers(f"{base}/healthz")


@pytest.mark.process
def test_up_refuses_a_port_in_use_before_starting_anything(var_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [PYTHON, "-m", "service", "up", "--port", str(port)],
            env=service_env(var_dir),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "is up" not in result.stdout
    assert not processes_with_env(str(var_dir))


@pytest.mark.process
@pytest.mark.embedded_broker
def test_a_reader_subscribes_confirms_and_unsubscribes_on_up(var_dir: Path, tmp_path: Path) -> None:
    """The README's tour, as a newcomer drives it with curl: no server but `newsletter up`."""
    env = service_env(var_dir)
    subprocess.run(
        [PYTHON, "-m", "service", "demo"], env=env, check=True, capture_output=True, timeout=60
    )
    port = free_port()
    log = tmp_path / "up.log"
    up = start([PYTHON, "-m", "service", "up", "--port", str(port)], env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{base}/healthz"), 15, "/healthz", log)

        def polled() -> bool:  # the demo's feeds, served by the API, polled by the worker
            tags = httpx.get(f"{base}/api/tags", timeout=5).json()
            return bool(tags) and all(t["posts"] > 0 for t in tags)

        wait_for(polled, 30, "the demo feeds to be polled", log)
        atom = httpx.get(f"{base}/feeds/transport.atom", timeout=5)
        assert atom.status_code == 200
        assert b"Council approves the river district tram line" in atom.content

        with httpx.Client(base_url=base, timeout=10) as browser:
            accepted = browser.post(
                "/api/subscriptions",
                json={
                    "email": "reader@example.org",
                    "cadence": {"transport": "instant", "climate": "weekly"},
                },
            )
            assert accepted.status_code == 202, accepted.text

            outbox = var_dir / "outbox"
            wait_for(lambda: any(outbox.glob("*.eml")), 30, "the confirmation mail", log)
            [eml] = list(outbox.glob("*.eml"))
            mail = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
            body = mail.get_body(("plain",))
            assert body is not None
            link = re.search(r"http://localhost:\d+(/confirm/\S+)", str(body.get_content()))
            assert link is not None, body

            page = browser.get(link.group(1))  # shows a button; a GET confirms nothing
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert csrf is not None
            done = browser.post(link.group(1), data={"csrf_token": csrf.group(1)})
            assert done.status_code == 200, done.text
            manage = re.search(r"/preferences/([^\"]+)", done.text)
            assert manage is not None

            me = browser.get("/api/me", headers={"X-Subscriber-Token": manage.group(1)}).json()
            assert me["status"] == "active"
            assert me["subscriptions"] == {"transport": "instant", "climate": "weekly"}

        # RFC 8058: a mail client's one-click POST, no cookie, no page, no redirect.
        tokens = Tokens(Settings(var_dir=var_dir))
        reader = tokens.read(Purpose.MANAGE, manage.group(1)).subscriber_id
        unsubscribe = tokens.make(Purpose.UNSUBSCRIBE, TokenData(reader))
        one_click = httpx.post(
            f"{base}/unsubscribe/{unsubscribe}", data={"List-Unsubscribe": "One-Click"}, timeout=10
        )
        assert one_click.status_code == 200
        assert "set-cookie" not in one_click.headers
        me = httpx.get(f"{base}/api/me", headers={"X-Subscriber-Token": manage.group(1)}).json()
        assert me["status"] == "unsubscribed"
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=30)
        stop(up)
