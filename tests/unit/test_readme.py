"""The README is the user's manual: its settings table and commands must match the code."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from service.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented_with_its_default(name: str) -> None:
    default = Settings.model_fields[name].default
    if isinstance(default, SecretStr):
        default = default.get_secret_value()
    shown = f"`{default}`" if default not in (None, "") else "(empty)"
    assert f"| `NEWSLETTER_{name.upper()}` | {shown} |" in README


def test_quick_start_has_the_run_and_test_commands() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = [line for line in quick_start.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2
    assert "newsletter up" in commands[0]
    assert "pytest" in commands[1]
