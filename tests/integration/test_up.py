"""`newsletter up` as a newcomer runs it: no server configured, one command, Ctrl-C to stop."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

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
