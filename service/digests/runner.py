"""`newsletter digest run`: plan what is due and send it here (or hand it to the workers)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

from service.config import get_settings
from service.db import session_factory
from service.digests.planning import plan_digests
from service.digests.sending import BatchReport, send_batch
from service.mail.throttle import throttle_from_settings

__all__ = ["run_digests"]

MAX_WAIT = 30.0  # in-process retries wait at most this; the rest is left to the workers


def run_digests(
    *, schedule_name: str | None, force: bool, in_process: bool, rounds: int = 3
) -> tuple[list[str], bool]:
    """Lines to print and whether everything planned reached a final state."""
    from service.tasks import dispatch, sender

    batches: list[tuple[int, list[int]]] = []

    def collect(edition_id: int, ids: Sequence[int]) -> None:
        batches.append((edition_id, list(ids)))

    sessions = session_factory()
    with sessions() as session:
        planned = plan_digests(
            session,
            collect if in_process else dispatch,
            datetime.now(UTC),
            schedule_name=schedule_name,
            force=force,
        )
    lines = [f"{p.key}: {p.deliveries} new deliveries in {p.batches} batches" for p in planned]
    if not planned:
        lines.append("nothing due (use --now to send as if every reader's hour had come)")
    if not in_process:
        return lines, True
    mail, settings, total = sender(), get_settings(), BatchReport()
    throttle = throttle_from_settings(settings, mail.name)
    for _ in range(rounds):
        retry: list[tuple[int, list[int]]] = []
        wait = 0.0
        for edition_id, ids in batches:
            report = send_batch(
                sessions,
                mail,
                settings,
                edition_id,
                ids,
                throttle=throttle,
            )
            total.counts.update(report.counts)
            if report.paused:
                lines.append(f"edition {edition_id} paused: {report.paused}")
            elif report.retry_ids:
                retry.append((edition_id, report.retry_ids))
                wait = max(wait, report.retry_in)
        if not retry:
            break
        batches = retry
        time.sleep(min(wait, MAX_WAIT))
    left = sum(len(ids) for _, ids in retry)  # still failing after the last round
    lines.append(total.describe() + (f"; {left} left queued for the workers" if left else ""))
    return lines, not left
