"""docker-compose.yml can't run here (no Docker engine), so check what it would run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import Settings
from service.tasks import app as celery_app
from tests.cli_commands import check_newsletter_args

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
OUR_SERVICES = [name for name, svc in COMPOSE["services"].items() if "build" in svc]


def test_the_stack_has_every_part() -> None:
    assert {"api", "worker", "beat", "redis", "postgres", "mailpit", "migrate"} <= set(
        COMPOSE["services"]
    )


@pytest.mark.parametrize("name", OUR_SERVICES)
def test_each_command_is_a_real_command(name: str) -> None:
    argv: list[str] = COMPOSE["services"][name]["command"]
    if argv[0] == "newsletter":
        check_newsletter_args(argv[1:])  # a real command, and every option it passes exists
    else:
        assert argv[:3] == ["celery", "-A", "worker"]
        assert argv[3] in {"worker", "beat", "inspect"}
        queues = argv[argv.index("--queues") + 1].split(",")
        assert set(queues) <= {q.name for q in celery_app.conf.task_queues}


def test_the_workers_consume_every_queue() -> None:
    consumed: set[str] = set()
    for service in COMPOSE["services"].values():
        argv = service.get("command", [])
        if "--queues" in argv:
            consumed |= set(argv[argv.index("--queues") + 1].split(","))
    assert consumed == {q.name for q in celery_app.conf.task_queues}


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(env) if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


@pytest.mark.parametrize("name", OUR_SERVICES)
def test_each_variable_is_a_real_setting(name: str) -> None:
    settings = {f"NEWSLETTER_{field.upper()}" for field in Settings.model_fields}
    env = _environment(COMPOSE["services"][name])
    ours = {k for k in env if k.startswith("NEWSLETTER_")}
    assert ours, "the service is not configured at all"
    assert ours <= settings, f"unknown settings: {sorted(ours - settings)}"
    assert env["NEWSLETTER_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["NEWSLETTER_BROKER_URL"].startswith("redis://")


@pytest.mark.parametrize("name", [*OUR_SERVICES, "redis", "postgres", "mailpit"])
def test_long_running_services_have_healthchecks(name: str) -> None:
    service = COMPOSE["services"][name]
    if service.get("restart") == "no":  # one-shot jobs like the migration
        return
    if name == "beat":  # beat has no port and no pidbox; its restart policy is its check
        return
    assert service["healthcheck"]["test"]


def test_migrations_run_before_the_api_and_workers_start() -> None:
    for name in ("api", "worker", "beat"):
        depends = COMPOSE["services"][name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_the_dockerfile_installs_what_compose_runs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+)", dockerfile, flags=re.MULTILINE))
    assert {"service", "templates", "worker.py"} <= copied
