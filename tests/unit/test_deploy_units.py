"""deploy/systemd/ (the bare-metal path) can't be started here, so check what it would run."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from service.config import Settings
from tests.cli_commands import check_newsletter_args

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
SERVICES = sorted(p.name for p in UNITS.glob("*.service"))
ENV_FILE = "/etc/newsletter/newsletter.env"


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string((UNITS / name).read_text())
    return parser


def systemd_expanded(value: str, instance: str = "2") -> str:
    """What systemd hands the program: `%i` the instance name, `%%` a literal `%`."""
    return value.replace("%%", "\0").replace("%i", instance).replace("\0", "%")


def test_every_component_has_a_unit() -> None:
    assert {
        "newsletter-api.service",
        "newsletter-worker@.service",
        "newsletter-priority-worker.service",
        "newsletter-beat.service",
        "newsletter-migrate.service",
    } <= set(SERVICES)


@pytest.mark.parametrize("name", SERVICES)
def test_each_exec_start_is_a_real_newsletter_command(name: str) -> None:
    service = unit(name)["Service"]
    argv = shlex.split(systemd_expanded(service["ExecStart"]))
    assert argv[0] == "/opt/newsletter/.venv/bin/newsletter"
    check_newsletter_args(argv[1:])
    assert "%" not in " ".join(argv).replace("@%h", ""), "an unexpanded systemd specifier"
    assert service["EnvironmentFile"] == ENV_FILE
    assert service["User"] == "newsletter"


@pytest.mark.parametrize("name", [n for n in SERVICES if n != "newsletter-migrate.service"])
def test_long_running_units_restart_and_wait_for_the_migrations(name: str) -> None:
    parsed = unit(name)
    assert parsed["Service"]["Restart"] == "always"
    assert "newsletter-migrate.service" in parsed["Unit"]["Requires"].split()
    assert "newsletter-migrate.service" in parsed["Unit"]["After"].split()
    assert parsed["Install"]["WantedBy"] == "newsletter.target"


def test_worker_instances_get_distinct_celery_node_names() -> None:
    exec_start = unit("newsletter-worker@.service")["Service"]["ExecStart"]
    one, two = (shlex.split(systemd_expanded(exec_start, i)) for i in ("1", "2"))
    node = one.index("--hostname") + 1
    assert one[node] == "worker1@%h"  # Celery puts the host name in for %h
    assert one[node] != two[node]


def test_the_environment_file_example_sets_only_real_settings() -> None:
    lines = (UNITS / "newsletter.env.example").read_text().splitlines()
    pairs = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    settings = {f"NEWSLETTER_{field.upper()}" for field in Settings.model_fields}
    assert set(pairs) <= settings, f"unknown settings: {sorted(set(pairs) - settings)}"
    assert pairs["NEWSLETTER_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert pairs["NEWSLETTER_BROKER_URL"].startswith("redis://")
    assert pairs["NEWSLETTER_VAR_DIR"] == "/var/lib/newsletter"  # the units' StateDirectory
