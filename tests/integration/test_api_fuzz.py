"""Schemathesis generates requests from /openapi.json: no 5xx, every answer matches the schema.

Its "schema-valid data must be accepted" check is left out: the schema cannot say which tags
exist or which domains are blocked, and those requests rightly get a 422 naming the field.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy.orm import Session

from service import migrate
from service.config import Settings
from service.db import make_engine
from service.models import Tag
from tests.fakes import app_with_sync_intake
from tests.integration.test_readers_api import RecordingNotifier

EXAMPLES_PER_OPERATION = 40
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
_calls: Counter[str] = Counter()


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "broker" / "queue").mkdir(parents=True)  # so /readyz is ready, as under `up`
    engine = make_engine(f"sqlite:///{folder / 'fuzz.db'}")
    migrate.upgrade(engine)
    with Session(engine) as session:
        session.add_all([Tag(slug="ukraine", name="Ukraine"), Tag(slug="economy", name="Economy")])
        session.commit()
    app = app_with_sync_intake(
        Settings(
            var_dir=folder,
            log_format="text",
            log_level="WARNING",
            rate_limit_subscribe_per_ip="100000/minute",
            rate_limit_subscribe_per_address="100000/minute",
        ),
        engine,
    )
    app.state.notifier = RecordingNotifier()
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "schemathesis.json").write_text(
        json.dumps({"examples": sum(_calls.values()), "per_operation": dict(_calls)}, indent=2)
    )
    engine.dispose()


@pytest.mark.sqlite
def test_no_server_error_and_answers_match_the_schema(api_schema: schemathesis.BaseSchema) -> None:
    # Driven through Hypothesis directly: schemathesis' pytest plugin predates pytest 9.
    failures: list[str] = []
    for result in api_schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"unusable operation in the schema: {result.err()}")
            continue
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            _calls[f"{case.method} {case.path}"] += 1
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    assert len(_calls) >= 5  # every reader and operations route was exercised
