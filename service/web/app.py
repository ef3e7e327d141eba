"""The FastAPI application: health, readiness, metrics; features add their routers here."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy import Engine

from service.config import Settings, get_settings
from service.db import get_engine
from service.health import check_broker, check_database
from service.logs import configure_logging

log = logging.getLogger(__name__)

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

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        # The route template, not the path: a token in the path must not become a label.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        HTTP_LATENCY.labels(route).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"route": request.url.path})
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "Not ready"}})
    async def readyz() -> JSONResponse:
        """Readiness: the database and the broker both answer; 503 names the one that doesn't."""
        checks = [
            await run_in_threadpool(check_database, engine or get_engine()),
            await run_in_threadpool(check_broker, settings),
        ]
        ready = all(c.ok for c in checks)
        body = {
            "status": "ready" if ready else "not ready",
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


app = create_app()
