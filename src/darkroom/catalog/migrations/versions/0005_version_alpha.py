"""The rest of a version's header: whether it has an alpha channel (with its format and
pages, what a rendition's format depends on), its EXIF orientation and whether it has an
ICC profile, so that a job names its renditions without reading the source, and renders
without probing it. And an index of renditions by storage key: a stopped job keeps what
any version catalogued.

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
    op.add_column("image_versions", sa.Column("orientation", sa.Integer, nullable=True))
    op.add_column("image_versions", sa.Column("icc", sa.Boolean, nullable=True))
    op.create_index("ix_renditions_storage_key", "renditions", ["storage_key"])


def downgrade() -> None:
    op.drop_index("ix_renditions_storage_key", "renditions")
    # in place on both databases (SQLite 3.35+): a batch copy of the table would drop the
    # old one, and with it every rendition row (ON DELETE CASCADE)
    for column in ("icc", "orientation", "alpha"):
        op.execute(f"ALTER TABLE image_versions DROP COLUMN {column}")
