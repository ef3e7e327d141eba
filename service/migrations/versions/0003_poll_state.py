"""Poll state on sources: a lease (one poll in flight), last result, last unconditional fetch.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sources", sa.Column("last_result", sa.String(length=200), nullable=True))
    op.add_column(
        "sources", sa.Column("lease_until", service.models.UTCDateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "sources",
        sa.Column("last_unconditional_at", service.models.UTCDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("last_unconditional_at")
        batch.drop_column("lease_until")
        batch.drop_column("last_result")
