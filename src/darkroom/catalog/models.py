"""The catalog's tables, as SQLAlchemy 2 typed declarative models.

An image is a stable id and a storage key; each upload or replacement adds a version with
what was read from its bytes. Renditions and jobs hang off versions and images for the
pipelines; the outbox holds events written in the same transaction as the change.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, String, Text, TypeDecorator
from sqlalchemy import UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


# Keys sort and compare byte-wise on every database (cursor pages, prefix matches).
KEY_TYPE = String(1024).with_variant(String(1024, collation="C"), "postgresql")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator):
    """Stored as naive UTC on every database, read back as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict: JSON, list: JSON}


class Image(Base):
    """A catalogued source: `key` is where its current bytes live in storage."""

    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    key: Mapped[str] = mapped_column(KEY_TYPE, unique=True)
    status: Mapped[str] = mapped_column(String(16), default="ready")
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    tags: Mapped[list[ImageTag]] = relationship(cascade="all, delete-orphan",
                                                passive_deletes=True, lazy="selectin")
    versions: Mapped[list[ImageVersion]] = relationship(
        back_populates="image", cascade="all, delete-orphan", passive_deletes=True,
        order_by="ImageVersion.number")


class ImageTag(Base):
    __tablename__ = "image_tags"

    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"),
                                          primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class ImageVersion(Base):
    """One upload of an image's bytes and the facts read from them."""

    __tablename__ = "image_versions"
    __table_args__ = (UniqueConstraint("image_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    number: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(8), index=True)
    width: Mapped[int]
    height: Mapped[int]
    pages: Mapped[int]
    # the rest of the header (None: catalogued before 0005 recorded it)
    alpha: Mapped[bool | None]
    orientation: Mapped[int | None]
    icc: Mapped[bool | None]
    exif: Mapped[dict]
    colours: Mapped[list]
    blurhash: Mapped[str] = mapped_column(String(64))
    phash: Mapped[str] = mapped_column(String(16))
    storage_key: Mapped[str] = mapped_column(String(1024))
    etag: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    image: Mapped[Image] = relationship(back_populates="versions")
    renditions: Mapped[list[Rendition]] = relationship(cascade="all, delete-orphan",
                                                       passive_deletes=True)


class Rendition(Base):
    """A derivative of one version, named by the plan's hash (written by pipelines)."""

    __tablename__ = "renditions"
    __table_args__ = (UniqueConstraint("version_id", "plan_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("image_versions.id", ondelete="CASCADE"))
    plan_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64), default="")
    storage_key: Mapped[str] = mapped_column(String(1024), index=True)
    format: Mapped[str] = mapped_column(String(8))
    bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(default=0)
    height: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """A pipeline's run over one version of an image; `run` counts its retries from 1.

    `definition` is the pipeline as it was when the job was made, so editing a pipeline
    never changes a run under way. Its DBOS workflow id is `{id}.{run}`."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_created", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"),
                                          index=True)
    version: Mapped[int]
    pipeline: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(String(16), default="uploaded")
    run: Mapped[int] = mapped_column(default=1)
    definition: Mapped[dict | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


def workflow_id(job_id: str, run: int) -> str:
    """The DBOS workflow id of a job's run."""
    return f"{job_id}.{run}"


class IdempotencyKey(Base):
    """The first successful answer to a request sent with an `Idempotency-Key`."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class OutboxEvent(Base):
    """An event to deliver, written in the same transaction as the change it reports."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "delivered_at", "dead_at", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(512))
    payload: Mapped[dict]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
    dead_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class OutboxDelivery(Base):
    """One event's delivery to one sink: its own attempts, schedule and dead letter.

    The dispatcher creates a row per configured sink when it first sees an event; the
    outbox row is `delivered_at` once every sink delivered, `dead_at` once one gave up."""

    __tablename__ = "outbox_deliveries"
    __table_args__ = (Index("ix_outbox_deliveries_due", "delivered_at", "dead_at",
                            "next_attempt_at"),)

    event_id: Mapped[str] = mapped_column(ForeignKey("outbox.id", ondelete="CASCADE"),
                                          primary_key=True)
    sink: Mapped[str] = mapped_column(String(128), primary_key=True)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
    dead_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
