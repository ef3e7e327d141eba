"""Bounce and complaint figures for Prometheus, computed from the database at scrape time.

A collector, not gauges kept up to date: the figures live in the database (events arrive
through the API process, the worker and the bounce mailbox alike), so each scrape reads the
recent editions' figures (`figures.recent`: a few grouped queries) and reports them. Labels
stay bounded: the last ``RECENT_EDITIONS`` editions, and the backends they used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.bounces import figures

log = logging.getLogger(__name__)

_SERIES = (
    ("sent_deliveries", "Deliveries sent", "sent"),
    ("bounced_deliveries", "Sent deliveries that bounced (hard or soft)", "bounced"),
    ("complained_deliveries", "Sent deliveries a reader marked as spam", "complained"),
    ("bounce_rate", "Bounced over sent deliveries (0 to 1)", "bounce_rate"),
    ("complaint_rate", "Complaints over sent deliveries (0 to 1)", "complaint_rate"),
)


class FeedbackCollector(Collector):
    """`newsletter_edition_*{edition,kind}` for the recent editions and
    `newsletter_backend_*{backend}` over them, plus `newsletter_feedback_figures_up`."""

    def __init__(self, sessions: Callable[[], Session], editions: int = figures.RECENT_EDITIONS):
        self.sessions, self.editions = sessions, editions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "newsletter_feedback_figures_up", "1 if the bounce figures could be read just now"
        )
        try:
            with self.sessions() as session:
                found = figures.recent(session, self.editions)
        except SQLAlchemyError as exc:  # a scrape must answer even when the database doesn't
            log.warning("bounce figures unavailable", extra={"error": str(exc)[:200]})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for suffix, text, attribute in _SERIES:
            edition = GaugeMetricFamily(
                f"newsletter_edition_{suffix}",
                f"{text}, per edition (the {self.editions} latest)",
                labels=["edition", "kind"],
            )
            for edition_id, kind, f in found.editions:
                edition.add_metric([str(edition_id), kind], getattr(f, attribute))
            yield edition
            backend = GaugeMetricFamily(
                f"newsletter_backend_{suffix}",
                f"{text}, per mail backend over the {self.editions} latest editions",
                labels=["backend"],
            )
            for name, f in sorted(found.backends.items()):
                backend.add_metric([name or "unknown"], getattr(f, attribute))
            yield backend
