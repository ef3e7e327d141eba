"""The FastAPI application: health, readiness, metrics; features add their routers here."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.bounces.metrics import FeedbackCollector
from service.config import Settings, get_settings
from service.db import get_engine, session_factory
from service.health import CHECK_TIMEOUT, Check, check_broker, check_database
from service.logs import configure_logging
from service.monitoring import BrokerCollector, DatabaseCollector
from service.readers.accounts import KnownTags, ReaderError
from service.readers.ratelimit import RateLimiter
from service.readers.tokens import Tokens
from service.tasks import QUEUES, TaskAnnouncer, TaskIntake, TaskNotifier, TaskPolls
from service.web import (
    admin_api,
    admin_bulk,
    admin_editions,
    admin_operations,
    archive_pages,
    console,
    demo_feeds,
    feeds_out,
    pages,
    readers_api,
    webhooks,
)

log = logging.getLogger(__name__)
access_log = logging.getLogger("service.web.access")

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "newsletter_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "newsletter_http_request_duration_seconds", "Time to answer an HTTP request", ["route"]
)


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """The app; tests pass their own settings and engine, production reads the environment."""
    settings = settings or get_settings()
    configure_logging(settings)
    app = FastAPI(
        title="newsletter",
        summary="Email digests of a news site's tagged posts",
        version="0.1.0",
    )
    # Built lazily by get_engine(), so importing the app connects to nothing.
    app.state.settings = settings
    app.state.sessions = _LazySessions(engine)
    app.state.tokens = Tokens(settings)
    app.state.limiter = RateLimiter(settings)
    app.state.notifier = TaskNotifier()
    app.state.intake = TaskIntake()
    app.state.known_tags = KnownTags()  # the subscribe path's tag check, mostly without a query
    app.state.announcer = TaskAnnouncer()
    app.state.polls = TaskPolls()
    # This app's own figures from its database, read at scrape time through whatever session
    # factory the app holds then (the process-wide registry holds the request counters).
    app.state.figures = CollectorRegistry()
    app.state.figures.register(FeedbackCollector(lambda: app.state.sessions()))
    app.state.figures.register(DatabaseCollector(lambda: app.state.sessions()))
    app.state.figures.register(BrokerCollector(settings, QUEUES))
    app.include_router(readers_api.router)
    app.include_router(pages.router)
    app.include_router(archive_pages.router)
    app.include_router(feeds_out.router)
    app.include_router(admin_api.router)
    app.include_router(admin_operations.router)
    app.include_router(admin_editions.router)
    app.include_router(admin_bulk.router)
    app.include_router(demo_feeds.router)
    app.include_router(console.router)
    app.include_router(webhooks.router)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # A person who mistypes a page address gets a page; scripts and the API get JSON.
        wants_page = "text/html" in request.headers.get("accept", "")
        if wants_page and not request.url.path.startswith(("/api/", "/webhooks/")):
            return pages.error_page(request, exc.status_code, headers=exc.headers)
        return await http_exception_handler(request, exc)

    @app.exception_handler(ReaderError)
    async def reader_error(request: Request, exc: ReaderError) -> JSONResponse:
        detail = [{"loc": ["body", exc.field], "msg": exc.message, "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500  # what the client gets if the handler raises
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            # The route template, never the path: reader tokens live in paths, and must
            # appear neither in logs nor as metric labels (unbounded cardinality).
            route = getattr(request.scope.get("route"), "path", "unmatched")
            method = request.method if request.method in HTTP_METHODS else "other"
            elapsed = time.perf_counter() - started
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_LATENCY.labels(route).observe(elapsed)
            access_log.info(
                "request",
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                },
            )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        route = getattr(request.scope.get("route"), "path", "unmatched")
        log.exception("unhandled error", extra={"route": route})
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "Not ready"}})
    async def readyz() -> JSONResponse:
        """Readiness: the database and the broker both answer; 503 names the one that doesn't."""
        checks = await asyncio.gather(
            _bounded(check_database, "database", engine or get_engine()),
            _bounded(check_broker, "broker", settings),
        )
        ready = all(c.ok for c in checks)
        body = {
            "status": "ready" if ready else "not ready",
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics() -> Response:
        """Prometheus text exposition: this process's request counters, and figures read from
        the database and the broker at scrape time: deliveries by status and backend, send
        latency, queue depth and age, feed sources by poll result, feed lag, bounce and
        complaint rates (README, "Observability"). Always 200: an unreachable database or
        broker shows as `newsletter_database_up 0` / `newsletter_broker_up 0`."""
        body = generate_latest() + generate_latest(app.state.figures)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


class _LazySessions:
    """A session factory bound on first use, to the given engine or the configured one."""

    def __init__(self, engine: Engine | None) -> None:
        self._engine = engine
        self._factory: sessionmaker[Session] | None = None

    def __call__(self) -> Session:
        if self._factory is None:
            self._factory = session_factory(self._engine or get_engine())
        return self._factory()


async def _bounded(check: Callable[[Any], Check], name: str, target: Any) -> Check:
    """Run a blocking check in a thread; a check that hangs is a failed check, not a hung probe."""
    try:
        return await asyncio.wait_for(run_in_threadpool(check, target), CHECK_TIMEOUT + 1)
    except TimeoutError:
        return Check(name, False, f"no answer within {CHECK_TIMEOUT + 1:.0f}s")


app = create_app()
