"""Health, readiness and metrics as an operator or a load balancer sees them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.config import Settings
from service.db import make_engine
from service.web.app import create_app


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket closes


def _client(settings: Settings, engine: Engine) -> TestClient:
    return TestClient(create_app(settings, engine), raise_server_exceptions=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "broker" / "queue").mkdir(parents=True)
    return Settings(var_dir=tmp_path, log_format="text")


def test_healthz_answers(settings: Settings, engine: Engine) -> None:
    response = _client(settings, engine).get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_when_database_and_embedded_broker_answer(settings: Settings, engine: Engine) -> None:
    response = _client(settings, engine).get("/readyz")
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert checks["database"] == {"ok": True, "detail": engine.dialect.name}
    assert checks["broker"]["ok"] is True


@pytest.mark.redis
def test_ready_with_redis_broker(settings: Settings, engine: Engine, redis_url: str) -> None:
    redis_settings = settings.model_copy(update={"broker_url": redis_url})
    response = _client(redis_settings, engine).get("/readyz")
    assert response.status_code == 200, response.text


def test_not_ready_names_an_unreachable_database(settings: Settings) -> None:
    dead = make_engine(
        f"postgresql+psycopg://nobody@127.0.0.1:{_closed_port()}/none",
        connect_args={"connect_timeout": 2},
    )
    response = _client(settings, dead).get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"]["ok"] is False
    assert "OperationalError" in body["checks"]["database"]["detail"]
    assert body["checks"]["broker"]["ok"] is True


def test_not_ready_names_an_unreachable_broker(settings: Settings, engine: Engine) -> None:
    down = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{_closed_port()}/0"})
    response = _client(down, engine).get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["broker"]["ok"] is False
    assert checks["database"]["ok"] is True


def test_metrics_count_requests_by_route_not_path(settings: Settings, engine: Engine) -> None:
    client = _client(settings, engine)
    client.get("/healthz")
    client.get("/no/such/page")
    text = client.get("/metrics").text
    assert 'newsletter_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'route="unmatched",status="404"' in text
    assert "/no/such/page" not in text


def test_openapi_describes_the_operations_routes(settings: Settings, engine: Engine) -> None:
    spec = _client(settings, engine).get("/openapi.json").json()
    assert {"/healthz", "/readyz", "/metrics"} <= set(spec["paths"])


def test_an_unexpected_error_is_a_plain_500_without_a_traceback(
    settings: Settings, engine: Engine
) -> None:
    app = create_app(settings, engine)
    router = APIRouter()

    @router.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    app.include_router(router)
    client = TestClient(app, raise_server_exceptions=False)
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert "secret internals" not in response.text
    assert 'route="/boom",status="500"' in client.get("/metrics").text  # counted, too


def test_request_logs_name_the_route_never_the_path(
    settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings, engine)
    router = APIRouter()

    @router.get("/unsubscribe/{token}")
    def unsubscribe(token: str) -> dict[str, str]:
        return {"ok": "yes"}

    app.include_router(router)
    client = TestClient(app, raise_server_exceptions=False)
    caplog.set_level("INFO", logger="service.web.access")
    client.get("/unsubscribe/SECRET-TOKEN-123")
    client.request("FROBNICATE", "/healthz")
    records = [r for r in caplog.records if r.name == "service.web.access"]
    assert [getattr(r, "route", None) for r in records] == ["/unsubscribe/{token}", "/healthz"]
    ours = [r for r in caplog.records if r.name.startswith("service")]
    assert not [r for r in ours if "SECRET-TOKEN-123" in str(vars(r))]
    metrics = client.get("/metrics").text
    assert "FROBNICATE" not in metrics  # clients cannot mint label values
    assert 'method="other"' in metrics


def test_a_mistyped_page_address_gets_a_page_and_the_api_keeps_json(
    settings: Settings, engine: Engine
) -> None:
    client = _client(settings, engine)
    page = client.get("/no/such/page", headers={"accept": "text/html"})
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    api = client.get("/api/no/such", headers={"accept": "text/html"})
    assert api.status_code == 404
    assert api.json() == {"detail": "Not Found"}
    assert client.get("/no/such/page").json() == {"detail": "Not Found"}  # scripts: JSON
