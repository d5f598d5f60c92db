"""The catalog: images, versions, renditions, idempotency keys and the event outbox, in
SQLite or PostgreSQL through SQLAlchemy, with Alembic migrations run in code."""

from darkroom.catalog.db import make_engine, migrate
from darkroom.catalog.repository import ImageQuery, parse_tags
from darkroom.catalog.service import Catalog, Staged

__all__ = ["Catalog", "ImageQuery", "Staged", "make_engine", "migrate", "parse_tags"]
