"""Whether a version has an alpha channel: with its format and pages, what a rendition's
format depends on, so a job can name its renditions without reading the source.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for versions catalogued before: their jobs read it from the source's header
    op.add_column("image_versions", sa.Column("alpha", sa.Boolean, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("image_versions") as batch:
        batch.drop_column("alpha")
