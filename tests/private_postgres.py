"""A PostgreSQL server of a test's own: its own cluster in a temp dir, on a free port.

Fault drills stop and restart it; the machine's shared server (5432) is never touched. The
binaries are PostgreSQL 15's (`PG_BIN`). initdb refuses to run as root, so as root every
command runs as the `postgres` user, in a directory that user owns.

    with PrivatePostgres() as pg:
        engine = make_engine(pg.url)
        pg.stop(); pg.start()
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.processes import free_port

PG_BIN = Path(os.environ.get("NEWSLETTER_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> str | None:
    """Why a private server cannot run here, or None when it can."""
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL binaries under {PG_BIN}"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to drop to the postgres user"
    return None


class PrivatePostgres:
    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def __enter__(self) -> Self:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            # A throwaway cluster: no flush to disk, which the drills do not test.
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: clients are disconnected, as in a service restart; `immediate`: a crash."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [*self._as_postgres, str(PG_BIN / program), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stdout}{done.stderr}")
