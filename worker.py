"""Celery entry point: ``celery -A worker worker --beat`` (or ``newsletter worker``)."""

import os

from service.tasks import app

# The database, queue files and outbox hold readers' addresses: private to this user.
os.umask(0o077)

__all__ = ["app"]
