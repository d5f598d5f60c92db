"""Per-sink delivery state of outbox events: attempts, schedule, dead letter.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_deliveries",
        sa.Column("event_id", sa.String(32), sa.ForeignKey("outbox.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("sink", sa.String(128), primary_key=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("delivered_at", sa.DateTime, nullable=True),
        sa.Column("dead_at", sa.DateTime, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_outbox_deliveries_due", "outbox_deliveries",
                    ["delivered_at", "dead_at", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("outbox_deliveries")
