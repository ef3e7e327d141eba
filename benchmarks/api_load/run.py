"""The API under load: subscribe, an Atom feed and /healthz on one uvicorn worker, with wrk.

The API runs as deployed (`newsletter api --workers 1` on a free loopback port) on a fresh
PostgreSQL database with Redis as the broker, so the rate limiter keeps its windows in Redis
(`Settings.rate_limit_storage_url`: the broker's Redis) and each accepted subscribe becomes a
task there, as in production. No worker runs: the tasks wait in the queue and are purged at
the end. One tag (`city`) has ``--posts`` posts for its feed.

wrk drives 50 connections (``--connections``) for ``--seconds`` each, one wrk thread per
connection so the Lua scripts here can give each connection its own client address: uvicorn
runs with `proxy_headers` and trusts `X-Forwarded-For` from 127.0.0.1, and the limiter keys on
the address it yields. Runs, in this order, against the same server:

1. `GET /healthz` - the framework's ceiling;
2. `POST /api/subscriptions`, one client address per connection (`subscribe.lua`): with the
   shipped limit of 10 a minute per address, each connection is refused (429) after its first
   ten; the figures are mostly the limiter saying no;
3. `POST /api/subscriptions`, a new address every request (`IP_PER=request`): each request
   passes both limits (per address and per email), reads the tags and enqueues its task, i.e.
   the accepted path, which is what the target is about;
4. `GET /feeds/city.atom`.

Reported per run: requests/s, p50 and p99 latency (wrk's), and the statuses seen. Target:
accepted subscribe ≥ 0.5 of the /healthz rate, its p99 under 50 ms.

Needs wrk (Debian: `apt-get install wrk`; it was installed that way on the development
machine). Run from the repository root (about 1 minute)::

    .venv/bin/python benchmarks/api_load/run.py [--seconds 10] [--connections 50]
        [--redis-url redis://127.0.0.1:6379/15] [--pg-url …] [--profile-svg out.svg]

``--profile-svg`` records the API process with py-spy during the accepted-subscribe run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from sqlalchemy import insert

from benchmarks.breaking import publish
from benchmarks.poll import Database, cpu_model, database_options, exit_on_sigterm
from service import tasks
from service.config import Settings
from service.db import session_factory
from service.migrate import upgrade
from service.models import Tag

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed(db: Database, posts: int) -> None:
    with session_factory(db.engine)() as s, s.begin():
        now = datetime.now(UTC) - timedelta(hours=1)
        tag_id = s.scalars(
            insert(Tag).values(slug="city", name="City", created_at=now).returning(Tag.id)
        ).one()
    for n in range(posts):
        publish(db, int(tag_id), n)


def wrk(
    base: str, script: str, args: argparse.Namespace, extra_env: dict[str, str]
) -> dict[str, Any]:
    c = str(args.connections)
    argv = ["wrk", "-t", c, "-c", c, "-d", f"{args.seconds}s", "--timeout", "5s", "-s", script]
    out = subprocess.run(
        [*argv, base],
        cwd=HERE,
        env=os.environ | extra_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    result["rate"] = result["requests"] / result["seconds"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--posts", type=int, default=30)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument(
        "--profile-svg",
        help="py-spy profile of the accepted-subscribe run (.svg; .txt: collapsed stacks)",
    )
    database_options(parser)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    exit_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="bench-api-load-"))
    db = Database(False, args.pg_url, tmp, prefix="api")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = {
        "DATABASE_URL": db.url,
        "BROKER_URL": args.redis_url,
        "SECRET_KEY": "bench-api-load-secret-0123456789abcdef",
        "BASE_URL": base,
        "VAR_DIR": str(tmp / "var"),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env |= {f"NEWSLETTER_{k}": v for k, v in settings.items()}
    tasks.configure(Settings(_env_file=None, broker_url=args.redis_url, var_dir=tmp / "var"))
    api: subprocess.Popen[bytes] | None = None
    results: list[tuple[str, dict[str, Any]]] = []
    run_id = str(int(time.time()) % 200)
    try:
        upgrade(db.engine)
        seed(db, args.posts)
        with (tmp / "api.log").open("ab") as log:
            api = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "service",
                    "api",
                    "--workers",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_up(base, api, tmp / "api.log")
        runs: list[tuple[str, str, dict[str, str]]] = [
            ("GET /healthz", "healthz.lua", {}),
            ("POST /api/subscriptions, one IP a connection", "subscribe.lua", {"RUN_ID": run_id}),
            (
                "POST /api/subscriptions, accepted (new IP a request)",
                "subscribe.lua",
                {"RUN_ID": str(int(run_id) + 1), "IP_PER": "request"},
            ),
            ("GET /feeds/city.atom", "feed.lua", {}),
        ]
        for name, script, extra in runs:
            spy = None
            if args.profile_svg and extra.get("IP_PER") == "request":
                spy = subprocess.Popen(
                    [
                        str(Path(sys.executable).with_name("py-spy")),
                        "record",
                        "-o",
                        args.profile_svg,
                        "-p",
                        str(api.pid),
                    ]
                    + ["-d", str(args.seconds), "-r", "200"]
                    # collapsed stacks for a .txt name, else a flame graph
                    + (["-f", "raw"] if args.profile_svg.endswith(".txt") else []),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            results.append((name, wrk(base, script, args, extra)))
            if spy is not None:
                spy.wait(60)
            print_row(*results[-1])
            time.sleep(1)
    finally:
        if api is not None:
            api.terminate()
            try:
                api.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(api.pid, 9)
                api.wait()
        with tasks.app.connection_for_write() as conn:  # the subscribe tasks no worker took
            conn.default_channel.queue_purge(tasks.PRIORITY_QUEUE)
        db.close()
        shutil.rmtree(tmp, ignore_errors=True)
    summary(args, results)
    return 0


def wait_up(base: str, api: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2):  # noqa: S310 - loopback
                return
        except OSError:
            if time.monotonic() > deadline or api.poll() is not None:
                raise SystemExit(f"the API did not start:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.2)


def print_row(name: str, r: dict[str, Any]) -> None:
    print(
        f"{name:54} {r['rate']:8,.0f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms"
        f"  statuses {r['statuses']}  socket errors {r['socket_errors']}",
        flush=True,
    )


def summary(args: argparse.Namespace, results: list[tuple[str, dict[str, Any]]]) -> None:
    if len(results) < 4:
        return
    ceiling, accepted = results[0][1], results[2][1]
    ratio = accepted["rate"] / ceiling["rate"]
    print()
    print(
        f"{cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
        f"{args.connections} connections, {args.seconds} s a run, one uvicorn worker"
    )
    print(
        f"accepted subscribe / healthz: {ratio:.2f} (target ≥ 0.5: "
        f"{'met' if ratio >= 0.5 else 'NOT met'}); accepted subscribe p99 "
        f"{accepted['p99_ms']:.1f} ms (target < 50 ms: "
        f"{'met' if accepted['p99_ms'] < 50 else 'NOT met'})"
    )


if __name__ == "__main__":
    sys.exit(main())
