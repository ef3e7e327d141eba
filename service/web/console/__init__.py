"""The operators' and editors' console at `/admin`: server-rendered pages over the same
service functions as the admin JSON API, signed in with an admin token (see `auth`)."""

from __future__ import annotations

from fastapi import APIRouter

from service.web.console import newsroom, operations, outbox, session
from service.web.console.auth import ConsoleRoute

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
router.include_router(session.router)
router.include_router(operations.router)
router.include_router(newsroom.router)
router.include_router(outbox.router)

__all__ = ["router"]
