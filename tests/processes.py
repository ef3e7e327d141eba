"""Start, watch and stop the service's own processes in tests (never the shared servers)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(var_dir: Path, **settings: str) -> dict[str, str]:
    """The environment for a child `newsletter` process: this test's VAR_DIR and settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env |= {
        "NEWSLETTER_VAR_DIR": str(var_dir),
        "NEWSLETTER_LOG_FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
    }
    env |= {f"NEWSLETTER_{k.upper()}": v for k, v in settings.items()}
    return env


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run one `newsletter` command to its end, as an operator would, and keep its output."""
    return subprocess.run(
        [PYTHON, "-m", "service", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a process in its own process group, its output going to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM the process (as a service manager would), then SIGKILL its group's leftovers.

    Only the leader gets SIGTERM: a Celery worker stops its own pool children, and signalling
    them too makes the warm shutdown hang.
    """
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError):  # leftovers: a worker's pool children
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


def wait_for(
    check: Callable[[], bool], timeout: float, what: str, log: Path | None = None
) -> float:
    """Poll ``check`` until true; returns the seconds it took or fails with the log's tail."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


def start_worker(
    env: dict[str, str], log: Path, queues: str = "priority,mail,poll,default"
) -> subprocess.Popen[bytes]:
    proc = start(
        [PYTHON, "-m", "service", "worker", "--queues", queues, "--concurrency", "1"], env, log
    )
    wait_for(lambda: " ready." in log.read_text(errors="replace"), 30, "the worker", log)
    return proc


def processes_with_env(marker: str) -> list[int]:
    """Pids of live processes whose environment contains ``marker`` (e.g. a unique VAR_DIR)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found
