"""Operators' lookup of one reader by address (operators only: it tells who reads what)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.readers.lookup import SubscriberRecord, find_subscribers
from service.web.admin_errors import ADMIN_ERRORS
from service.web.deps import OperatorDep, SessionDep

router = APIRouter(
    prefix="/api/admin/subscribers", tags=["admin: subscribers"], responses=ADMIN_ERRORS
)


@router.get("")
def lookup_subscribers(
    session: SessionDep,
    _: OperatorDep,
    email: Annotated[str, Query(min_length=1, max_length=320, description="The exact address")],
) -> list[SubscriberRecord]:
    """The reader with this exact address (any case): status, zone, hour, breaking alerts,
    subscriptions and the 20 most recent deliveries. An unknown address gives `[]`."""
    return find_subscribers(session, email)
