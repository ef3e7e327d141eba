"""Check that an argv a deployment file runs is a real `newsletter` command with real options.

Shared by the checks of docker-compose.yml and of deploy/systemd/ (tests/unit).
"""

from __future__ import annotations

from typing import Any

import typer

from service.cli import cli


def command(path: list[str]) -> Any:
    """Resolve `newsletter a b` to its (click) command, failing on a name that doesn't exist."""
    found: Any = typer.main.get_command(cli)
    for word in path:
        assert hasattr(found, "commands"), f"`{word}` given to a command with no subcommands"
        assert word in found.commands, f"`newsletter` has no command `{word}`"
        found = found.commands[word]
    return found


def is_command(words: list[str]) -> bool:
    try:
        command(words)
    except AssertionError:
        return False
    return True


def check_newsletter_args(args: list[str]) -> Any:
    """``args`` (what follows `newsletter`) name a command and pass only options it has; the
    command. An option's value is never taken for a subcommand (values follow options)."""
    words = []
    for arg in args:
        if arg.startswith("-"):
            break
        words.append(arg)
    depth = next(i for i in range(len(words), -1, -1) if is_command(words[:i]))
    found = command(words[:depth])
    assert not hasattr(found, "commands"), f"`newsletter {' '.join(words)}` needs a subcommand"
    known = {opt for p in found.params for opt in getattr(p, "opts", [])}
    given = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    assert given <= known, f"unknown options {sorted(given - known)} for `{found.name}`"
    return found
