"""What the service is doing, read at scrape time from the database and the broker.

Workers run in other processes and on other hosts, so `/metrics` on any API process reads the
shared truth instead of counting in the process it runs in: the deliveries and editions in the
database, the sources' poll state, and the queues in the broker. Every read is bounded (the
editions table, a window of recent editions through the (edition, status) index, the sources,
the posts of a week) and a scrape never fails: an unreachable database or broker reports
``newsletter_database_up 0`` / ``newsletter_broker_up 0`` and leaves its series out.

Send latency (a delivery's claim to its result) and feed lag (a post's publish time to its
first mail) are *gauge histograms* over a recent window, computed from the rows: a worker's
own histogram would need a scrape endpoint per worker host (prometheus_client's multiprocess
mode only joins the processes of one host), while the rows hold the same times for every host.
`histogram_quantile(0.99, sum by (le) (newsletter_send_latency_seconds_bucket))` needs no
``rate()`` over them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, Float, and_, case, cast, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.config import Settings
from service.models import (
    DeliveredPost,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Post,
    Source,
)
from service.queues import QueueDepth, queue_depths

__all__ = [
    "FEED_LAG_BUCKETS",
    "LATENCY_BUCKETS",
    "WINDOW",
    "BrokerCollector",
    "DatabaseCollector",
    "FeedLag",
    "Histogram",
    "SendFigures",
    "poll_results",
    "send_figures",
]

log = logging.getLogger(__name__)

WINDOW = timedelta(minutes=5)  # recent deliveries: what ended within this much time
FEED_LAG_WINDOW = timedelta(days=7)  # posts first seen this recently (a weekly digest's lag)
FEED_LAG_POSTS = 2000  # at most this many of them, newest first
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
FEED_LAG_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0,
                    172800.0, 604800.0)  # fmt: skip
_FINAL = (
    DeliveryStatus.SENT,
    DeliveryStatus.FAILED,
    DeliveryStatus.SKIPPED,
    DeliveryStatus.SUPPRESSED,
    DeliveryStatus.UNKNOWN,
)


@dataclass
class Histogram:
    """Cumulative bucket counts (``le`` → count), the count and the sum."""

    bounds: tuple[float, ...]
    buckets: list[int] = field(default_factory=list)
    count: int = 0
    total: float = 0.0

    def __post_init__(self) -> None:
        self.buckets = self.buckets or [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.buckets[i] += 1
        self.count += 1
        self.total += value

    def samples(self) -> list[tuple[str, float]]:
        pairs = [(_le(b), float(n)) for b, n in zip(self.bounds, self.buckets, strict=True)]
        return [*pairs, ("+Inf", float(self.count))]


def _le(bound: float) -> str:
    return f"{bound:g}" if bound < 1e6 else f"{bound:.1f}"


@dataclass
class SendFigures:
    totals: dict[str, int]  # all-time deliveries per final status, from the editions' counters
    pending: dict[str, int]  # queued and sending rows of unfinished editions
    editions: dict[str, int]  # unfinished editions: planned, sending, paused
    recent: dict[tuple[str, str], int]  # (status, backend) → rows that ended within WINDOW
    latency: dict[str, Histogram]  # backend → claim-to-result seconds of rows sent within WINDOW


def send_figures(session: Session, now: datetime, window: timedelta = WINDOW) -> SendFigures:
    """The delivery figures: five small queries, each bounded by an index or a small table."""
    sums = session.execute(
        select(
            func.coalesce(func.sum(Edition.sent), 0),
            func.coalesce(func.sum(Edition.failed), 0),
            func.coalesce(func.sum(Edition.skipped), 0),
            func.coalesce(func.sum(Edition.suppressed), 0),
            func.coalesce(func.sum(Edition.unknown), 0),
        )
    ).one()
    totals = {str(s): int(n) for s, n in zip(_FINAL, sums, strict=True)}
    open_editions = [EditionStatus.PLANNED, EditionStatus.SENDING]
    pending = {str(DeliveryStatus.QUEUED): 0, str(DeliveryStatus.SENDING): 0}
    for status, n in session.execute(
        select(Delivery.status, func.count())
        .join(Edition, Edition.id == Delivery.edition_id)
        .where(
            Edition.status.in_(open_editions),
            Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.SENDING]),
        )
        .group_by(Delivery.status)
    ):
        pending[str(status)] = n
    editions = {"planned": 0, "sending": 0, "paused": 0}
    for state, paused, n in session.execute(
        select(Edition.status, Edition.paused_reason.is_not(None), func.count())
        .where(Edition.status.in_(open_editions))
        .group_by(Edition.status, Edition.paused_reason.is_not(None))
    ):
        editions["paused" if paused else str(state)] += n
    cutoff = now - window
    # Every send batch touches its edition's heartbeat: the editions that sent lately.
    active = list(
        session.scalars(
            select(Edition.id)
            .where(Edition.heartbeat_at >= cutoff)
            .order_by(Edition.id.desc())
            .limit(100)
        )
    )
    recent: dict[tuple[str, str], int] = {}
    latency: dict[str, Histogram] = {}
    if active:
        # One pass over the rows that ended in the window: counts, and the sent ones' latency.
        timed = and_(Delivery.status == DeliveryStatus.SENT, Delivery.claimed_at.is_not(None))
        seconds = case((timed, _seconds_between(session, Delivery.claimed_at, Delivery.sent_at)))
        columns = [func.sum(case((seconds <= b, 1), else_=0)) for b in LATENCY_BUCKETS]
        for status, backend, n, timed_n, total, *buckets in session.execute(
            select(
                Delivery.status,
                Delivery.backend,
                func.count(),
                func.count(seconds),
                func.sum(seconds),
                *columns,
            )
            .where(
                Delivery.edition_id.in_(active),
                Delivery.sent_at >= cutoff,
                Delivery.status.in_(_FINAL),
            )
            .group_by(Delivery.status, Delivery.backend)
        ):
            recent[(str(status), backend or "none")] = n
            if timed_n:
                latency[backend or "none"] = Histogram(
                    LATENCY_BUCKETS,
                    [int(b or 0) for b in buckets],
                    int(timed_n),
                    float(total or 0.0),
                )
    return SendFigures(totals, pending, editions, recent, latency)


def _seconds_between(
    session: Session,
    start: InstrumentedAttribute[datetime | None],
    end: InstrumentedAttribute[datetime | None],
) -> ColumnElement[float]:
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", end - start), Float)
    # SQLite keeps UTC text; julianday() reads it to about ten microseconds.
    return (func.julianday(end) - func.julianday(start)) * 86400.0


# What `PollOutcome.describe()` leaves in `sources.last_result`, sorted into a few labels.
def poll_results(session: Session, now: datetime) -> tuple[dict[str, int], int]:
    """Sources by the result of their last poll, and the enabled ones overdue by 10 minutes."""
    result = Source.last_result
    label = case(
        (Source.last_polled_at.is_(None), "never"),
        (result.like("error:%"), "error"),
        (result == "disabled", "disabled"),
        (result == "not modified", "not_modified"),
        (result == "unchanged", "unchanged"),
        (result.like("0 new,%"), "updated"),
        (result.like("% new,%"), "new"),
        else_="other",
    )
    counts = {
        name: 0
        for name in ("new", "updated", "unchanged", "not_modified", "error", "disabled", "never")
    }
    for name, n in session.execute(select(label, func.count()).group_by(label)):
        counts[str(name)] = counts.get(str(name), 0) + n
    overdue = session.scalar(
        select(func.count()).where(
            Source.enabled.is_(True), Source.next_poll_at < now - timedelta(minutes=10)
        )
    )
    return counts, int(overdue or 0)


class FeedLag:
    """Publish time to first mail of the posts first seen in the last week.

    A post's first mail is its earliest row in the post ledger (written as a mail is claimed).
    It never changes once found, so it is kept: each scrape asks the ledger only about posts
    with no mail yet, and a post mailed to 20,000 readers is aggregated once.
    """

    def __init__(self) -> None:
        self._lag: dict[int, float] = {}

    def histogram(self, session: Session, now: datetime) -> Histogram:
        posts = session.execute(
            select(Post.id, func.coalesce(Post.published_at, Post.first_seen_at))
            .where(Post.first_seen_at >= now - FEED_LAG_WINDOW)
            .order_by(Post.first_seen_at.desc())
            .limit(FEED_LAG_POSTS)
        ).all()
        published = {post_id: at for post_id, at in posts}
        unknown = [p for p in published if p not in self._lag]
        for start in range(0, len(unknown), 500):
            chunk = unknown[start : start + 500]
            for post_id, first in session.execute(
                select(DeliveredPost.post_id, func.min(DeliveredPost.delivered_at))
                .where(DeliveredPost.post_id.in_(chunk))
                .group_by(DeliveredPost.post_id)
            ):
                if first is not None:
                    first = first if first.tzinfo else first.replace(tzinfo=UTC)
                    self._lag[post_id] = max(0.0, (first - published[post_id]).total_seconds())
        self._lag = {p: lag for p, lag in self._lag.items() if p in published}
        found = Histogram(FEED_LAG_BUCKETS)
        for lag in self._lag.values():
            found.observe(lag)
        return found


class DatabaseCollector(Collector):
    """`newsletter_deliveries_*`, `newsletter_send_latency_seconds`, `newsletter_editions_open`,
    `newsletter_feed_sources*`, `newsletter_feed_lag_seconds` and `newsletter_database_up`."""

    def __init__(self, sessions: Callable[[], Session]) -> None:
        self.sessions = sessions
        self.feed_lag = FeedLag()

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("newsletter_database_up", "1 if the database answered this scrape")
        started = time.perf_counter()
        now = datetime.now(UTC)
        try:
            with self.sessions() as session:
                figures = send_figures(session, now)
                polls, overdue = poll_results(session, now)
                lag = self.feed_lag.histogram(session, now)
        except Exception as exc:  # a scrape answers whatever broke; the reason goes to the log
            log.warning("database figures unavailable", extra={"error": str(exc)[:200]})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _delivery_metrics(figures)
        sources = GaugeMetricFamily(
            "newsletter_feed_sources",
            "Feed sources by the result of their last poll "
            "(new, updated, unchanged, not_modified, error, disabled, never)",
            labels=["last_poll"],
        )
        for name, n in polls.items():
            sources.add_metric([name], n)
        yield sources
        yield GaugeMetricFamily(
            "newsletter_feed_sources_overdue",
            "Enabled sources whose next poll is more than 10 minutes late",
            value=overdue,
        )
        feed_lag = GaugeHistogramMetricFamily(
            "newsletter_feed_lag_seconds",
            "Publish time to first mail, of the posts first seen in the last 7 days",
        )
        feed_lag.add_metric([], lag.samples(), lag.total)
        yield feed_lag
        yield GaugeMetricFamily(
            "newsletter_database_read_seconds",
            "Time this scrape spent reading the database's figures",
            value=time.perf_counter() - started,
        )


def _by_label(
    family: type[CounterMetricFamily | GaugeMetricFamily],
    name: str,
    documentation: str,
    label: str,
    values: Mapping[str, int],
) -> Metric:
    """One metric family with a sample per value of its single label."""
    metric = family(name, documentation, labels=[label])
    for key, n in values.items():
        metric.add_metric([key], n)
    return metric


def _delivery_metrics(figures: SendFigures) -> Iterator[Metric]:
    yield _by_label(
        CounterMetricFamily,
        "newsletter_deliveries",
        "Deliveries that reached a final status, all time (the editions' counters)",
        "status",
        figures.totals,
    )
    yield _by_label(
        GaugeMetricFamily,
        "newsletter_deliveries_pending",
        "Deliveries of unfinished editions still queued or being sent",
        "status",
        figures.pending,
    )
    yield _by_label(
        GaugeMetricFamily,
        "newsletter_editions_open",
        "Unfinished editions: planned, sending, or paused after failures",
        "state",
        figures.editions,
    )
    minutes = int(WINDOW.total_seconds() // 60)
    recent = GaugeMetricFamily(
        "newsletter_deliveries_recent",
        f"Deliveries that reached a final status in the last {minutes} minutes, per backend",
        labels=["status", "backend"],
    )
    for (status, backend), n in sorted(figures.recent.items()):
        recent.add_metric([status, backend], n)
    yield recent
    latency = GaugeHistogramMetricFamily(
        "newsletter_send_latency_seconds",
        f"Claim to result of the deliveries sent in the last {minutes} minutes, per backend",
        labels=["backend"],
    )
    for backend, histogram in sorted(figures.latency.items()):
        latency.add_metric([backend], histogram.samples(), histogram.total)
    yield latency


class BrokerCollector(Collector):
    """`newsletter_queue_messages{queue}`, `newsletter_queue_oldest_age_seconds{queue}`,
    `newsletter_queue_consumers{queue}` (RabbitMQ) and `newsletter_broker_up`."""

    def __init__(self, settings: Settings, queues: Sequence[str]) -> None:
        self.settings, self.queues = settings, tuple(queues)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("newsletter_broker_up", "1 if the broker answered this scrape")
        try:
            depths = queue_depths(self.settings, self.queues)
        except Exception as exc:  # kombu and redis raise transport-specific errors
            log.warning("queue depths unavailable", extra={"error": f"{type(exc).__name__}"})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _queue_metrics(depths)


def _queue_metrics(depths: list[QueueDepth]) -> Iterator[Metric]:
    messages = GaugeMetricFamily(
        "newsletter_queue_messages", "Messages waiting in the queue", labels=["queue"]
    )
    age = GaugeMetricFamily(
        "newsletter_queue_oldest_age_seconds",
        "How long the oldest ready message has waited (0 when empty; absent on RabbitMQ)",
        labels=["queue"],
    )
    consumers = GaugeMetricFamily(
        "newsletter_queue_consumers", "Consumers of the queue (RabbitMQ only)", labels=["queue"]
    )
    for d in depths:
        messages.add_metric([d.queue], d.messages)
        if d.oldest_age is not None or (d.messages == 0 and d.consumers is None):
            age.add_metric([d.queue], d.oldest_age or 0.0)
        if d.consumers is not None:
            consumers.add_metric([d.queue], d.consumers)
    yield messages
    yield age
    if any(d.consumers is not None for d in depths):
        yield consumers
