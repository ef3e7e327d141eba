"""`newsletter breaking` and `digest cancel` on the embedded defaults (SQLite, file broker)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from service import migrate
from service.db import make_engine, session_factory
from service.models import Cadence
from tests.digest_data import post, reader, tag
from tests.processes import run_cli, service_env


@pytest.mark.process
@pytest.mark.sqlite
def test_breaking_dry_run_send_and_cancel_from_the_command_line(var_dir: Path) -> None:
    env = service_env(var_dir, base_url="http://127.0.0.1:8000")
    engine = make_engine(f"sqlite:///{var_dir / 'newsletter.db'}")
    migrate.upgrade(engine)
    with session_factory(engine)() as s:
        port = tag(s, "port")
        reader(s, "ana@example.org", {port: Cadence.DAILY})
        reader(s, "ben@example.org", {port: Cadence.INSTANT})
        reader(s, "cy@example.org", {port: Cadence.DAILY}, breaking_alerts=False)
        urgent = post(s, "Ship aground at the pier", [port], published=datetime.now(UTC))
        s.commit()
        url = urgent.url
    engine.dispose()

    dry = run_cli(env, "breaking", url, "--dry-run", "--subject", "Pier closed")
    assert dry.returncode == 0, dry.stderr
    assert "would reach 2 readers" in dry.stdout
    assert "subject: Pier closed" in dry.stdout
    assert "ana@example.org" not in dry.stdout

    sent = run_cli(env, "breaking", url)  # no worker runs: the batches wait in the queue
    assert sent.returncode == 0, sent.stderr
    assert "edition 1: 2 readers, on the priority queue" in sent.stdout
    assert "planned 2" in sent.stdout
    again = run_cli(env, "breaking", url)
    assert "edition 1 exists already: nothing new sent" in again.stdout

    cancelled = run_cli(env, "digest", "cancel", "1")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "edition 1 cancelled: 2 deliveries never sent" in cancelled.stdout
    assert "cancelled" in run_cli(env, "digest", "list").stdout
    missing = run_cli(env, "breaking", "https://courier.example/no-such-story")
    assert missing.returncode == 1
    assert "no post" in missing.stderr
