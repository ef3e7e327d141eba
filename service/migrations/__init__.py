"""Alembic migrations, run by `newsletter db upgrade` (see `service.migrate`)."""
