"""Sending state on editions: instant posts, heartbeat, consecutive backend failures, pause.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.models

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("editions", sa.Column("post_ids", sa.JSON(), nullable=True))
    op.add_column(
        "editions",
        sa.Column("heartbeat_at", service.models.UTCDateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "editions",
        sa.Column("backend_failures", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column("editions", sa.Column("paused_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("editions") as batch:
        batch.drop_column("paused_reason")
        batch.drop_column("backend_failures")
        batch.drop_column("heartbeat_at")
        batch.drop_column("post_ids")
