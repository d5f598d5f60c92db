"""Pipelines, their runs' steps, rendition names and sizes, and the workers' heartbeats.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipelines",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("trigger", sa.String(16), nullable=False,
                                  server_default="uploaded"))
        jobs.add_column(sa.Column("run", sa.Integer, nullable=False, server_default="1"))
        jobs.add_column(sa.Column("definition", sa.JSON, nullable=True))
        jobs.add_column(sa.Column("started_at", sa.DateTime, nullable=True))
        jobs.add_column(sa.Column("finished_at", sa.DateTime, nullable=True))
    op.create_index("ix_jobs_status_created", "jobs", ["status", "created_at"])
    op.create_table(
        "job_steps",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=True),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.Column("duration_ms", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("output", sa.JSON, nullable=True),
    )
    with op.batch_alter_table("renditions") as renditions:
        renditions.add_column(sa.Column("name", sa.String(64), nullable=False,
                                        server_default=""))
        renditions.add_column(sa.Column("width", sa.Integer, nullable=False,
                                        server_default="0"))
        renditions.add_column(sa.Column("height", sa.Integer, nullable=False,
                                        server_default="0"))
    op.create_table(
        "workers",
        sa.Column("executor_id", sa.String(64), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
        sa.Column("recovered_at", sa.DateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("workers")
    with op.batch_alter_table("renditions") as renditions:
        for column in ("height", "width", "name"):
            renditions.drop_column(column)
    op.drop_table("job_steps")
    op.drop_index("ix_jobs_status_created", "jobs")
    with op.batch_alter_table("jobs") as jobs:
        for column in ("finished_at", "started_at", "definition", "run", "trigger"):
            jobs.drop_column(column)
    op.drop_table("pipelines")
