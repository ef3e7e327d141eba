"""`newsletter schedules` and `digest run` on the embedded defaults (SQLite, outbox)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from service import migrate
from service.db import make_engine, session_factory
from service.models import Cadence
from tests.digest_data import post, reader, tag
from tests.processes import run_cli, service_env


@pytest.mark.process
@pytest.mark.sqlite
def test_schedules_and_digest_run_deliver_real_digests_once(var_dir: Path) -> None:
    env = service_env(var_dir, base_url="http://127.0.0.1:8000")
    added = run_cli(env, "schedules", "add", "morning", "--cadence", "daily", "--at", "07:00")
    assert added.returncode == 0, added.stderr
    refused = run_cli(env, "schedules", "add", "sunday", "--cadence", "weekly")
    assert refused.returncode == 1
    assert "needs a weekday" in refused.stderr
    assert "morning: daily at 07:00 local" in run_cli(env, "schedules", "list").stdout

    engine = make_engine(f"sqlite:///{var_dir / 'newsletter.db'}")
    migrate.upgrade(engine)
    with session_factory(engine)() as s:
        port, weather = tag(s, "port"), tag(s, "weather")
        now = datetime.now(UTC)
        reader(s, "ana@example.org", {port: Cadence.DAILY}, timezone="Europe/Kyiv")
        reader(s, "ben@example.org", {port: Cadence.DAILY, weather: Cadence.DAILY})
        reader(s, "cy@example.org", {weather: Cadence.WEEKLY})  # not this schedule
        post(s, "Ferries run again", [port], published=now - timedelta(hours=2))
        post(s, "Gale warning", [weather], published=now - timedelta(hours=1))
        s.commit()
    engine.dispose()

    first = run_cli(env, "digest", "run", "--now")
    assert first.returncode == 0, first.stderr
    assert "sent 2" in first.stdout
    outbox = sorted((var_dir / "outbox").glob("*.eml"))
    assert len(outbox) == 2
    by_reader = {}
    for eml in outbox:
        msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
        by_reader[str(msg["To"])] = msg
    assert set(by_reader) == {"ana@example.org", "ben@example.org"}
    ben = by_reader["ben@example.org"]
    assert str(ben["Subject"]).endswith("daily digest: Gale warning (+1 more)")  # the newest first
    body = ben.get_body(("plain",))
    assert body is not None
    text = str(body.get_content())
    assert "Gale warning" in text
    assert "Ferries run again" in text
    assert ben["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    again = run_cli(env, "digest", "run", "--now")
    assert again.returncode == 0, again.stderr
    assert "0 new deliveries" in again.stdout
    assert len(list((var_dir / "outbox").glob("*.eml"))) == 2

    listing = run_cli(env, "digest", "list")
    assert "planned 2  sent 2  failed 0" in listing.stdout
    assert "done" in listing.stdout
