"""Reader preferences: pause, and one-time confirmation links.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# SQLite batch mode rebuilds a table from reflection, which cannot see expression indexes:
# the case-insensitive email index is dropped before and made again after any rebuild.
EMAIL_INDEX = "uq_subscribers_email_lower"


def upgrade() -> None:
    # ADD COLUMN needs no table rebuild on either backend.
    op.add_column(
        "subscribers",
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("subscribers", sa.Column("confirm_nonce", sa.String(length=32), nullable=True))


def downgrade() -> None:
    op.drop_index(EMAIL_INDEX, table_name="subscribers")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("confirm_nonce")
        batch.drop_column("paused")
    op.create_index(EMAIL_INDEX, "subscribers", [sa.literal_column("lower(email)")], unique=True)
