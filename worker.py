"""Celery entry point: ``celery -A worker worker --beat`` (or ``newsletter worker``)."""

from service.tasks import app

__all__ = ["app"]
