"""The operators' CRUD routes, gathered so the app includes them with one line."""

from __future__ import annotations

from fastapi import APIRouter

from service.web import admin_schedules, admin_sources, admin_subscribers, admin_suppressions

router = APIRouter()
for _module in (admin_sources, admin_schedules, admin_suppressions, admin_subscribers):
    router.include_router(_module.router)
