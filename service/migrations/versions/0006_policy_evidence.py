"""Suppression evidence and lift history; feedback events indexed for the policy and figures.

- `provider_events` gains the columns the policy counts and the figures join (kind, address
  hash, time, delivery), filled in for the events stored before;
- `suppressions` gains its evidence; `lifted_suppressions` keeps what operators lifted;
- `deliveries` is indexed by message id and provider id (how feedback finds its delivery).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

import hashlib
import warnings
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

import service.models

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("provider_events") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("email_hash", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("occurred_at", service.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("delivery_id", ID, nullable=True))
        batch.create_foreign_key(
            op.f("fk_provider_events_delivery_id_deliveries"),
            "deliveries",
            ["delivery_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index(op.f("ix_provider_events_delivery_id"), ["delivery_id"], unique=False)
        batch.create_index(
            "ix_provider_events_email_hash_kind_occurred_at",
            ["email_hash", "kind", "occurred_at"],
            unique=False,
        )
    op.add_column("suppressions", sa.Column("evidence", sa.JSON(), nullable=True))
    op.create_table(
        "lifted_suppressions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.Column("suppressed_at", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lifted_at", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lifted_by", sa.String(length=100), nullable=False),
        sa.Column("lift_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifted_suppressions")),
    )
    op.create_index(
        op.f("ix_lifted_suppressions_email_hash"), "lifted_suppressions", ["email_hash"]
    )
    op.create_index(op.f("ix_lifted_suppressions_lifted_at"), "lifted_suppressions", ["lifted_at"])
    op.create_index(op.f("ix_deliveries_message_id"), "deliveries", ["message_id"])
    op.create_index(op.f("ix_deliveries_provider_id"), "deliveries", ["provider_id"])
    _fill_in_stored_events()


def _fill_in_stored_events() -> None:
    """Events stored before this revision carry kind, address, time and delivery in their
    payload (as `policy.record` wrote it): copy them into the new columns."""
    events = sa.table(
        "provider_events",
        sa.column("id", sa.Integer()),
        sa.column("payload", sa.JSON()),
        sa.column("kind", sa.String()),
        sa.column("email_hash", sa.String()),
        sa.column("occurred_at", service.models.UTCDateTime(timezone=True)),
        sa.column("delivery_id", sa.Integer()),
    )
    deliveries = sa.table("deliveries", sa.column("id", sa.Integer()))
    bind = op.get_bind()
    for row_id, payload in bind.execute(sa.select(events.c.id, events.c.payload)).all():
        data = payload if isinstance(payload, dict) else {}
        values: dict[str, object] = {"kind": str(data.get("kind") or "other")[:16]}
        if isinstance(data.get("email"), str):
            address = data["email"].strip().lower()
            values["email_hash"] = hashlib.sha256(address.encode()).hexdigest()
        try:
            values["occurred_at"] = datetime.fromisoformat(str(data["occurred_at"]))
        except (KeyError, ValueError):
            pass
        delivery = data.get("delivery_id")
        if isinstance(delivery, int) and bind.scalar(
            sa.select(deliveries.c.id).where(deliveries.c.id == delivery)
        ):
            values["delivery_id"] = delivery
        bind.execute(sa.update(events).where(events.c.id == row_id).values(**values))


def downgrade() -> None:
    op.drop_index(op.f("ix_deliveries_provider_id"), table_name="deliveries")
    op.drop_index(op.f("ix_deliveries_message_id"), table_name="deliveries")
    op.drop_index(op.f("ix_lifted_suppressions_lifted_at"), table_name="lifted_suppressions")
    op.drop_index(op.f("ix_lifted_suppressions_email_hash"), table_name="lifted_suppressions")
    op.drop_table("lifted_suppressions")
    with op.batch_alter_table("suppressions") as batch:
        batch.drop_column("evidence")
    # SQLite rebuilds the table from its reflection, which reaches `subscribers` through the
    # foreign keys and cannot reflect its expression index (it is not needed here).
    with (
        warnings.catch_warnings(),
        op.batch_alter_table("provider_events") as batch,
    ):
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        batch.drop_index("ix_provider_events_email_hash_kind_occurred_at")
        batch.drop_index(op.f("ix_provider_events_delivery_id"))
        batch.drop_constraint(op.f("fk_provider_events_delivery_id_deliveries"), type_="foreignkey")
        batch.drop_column("delivery_id")
        batch.drop_column("occurred_at")
        batch.drop_column("email_hash")
        batch.drop_column("kind")
