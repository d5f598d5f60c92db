"""Catalog reads and writes as plain functions over a SQLAlchemy `Session` (the writes
of plain rows also over its `Connection`: half the cost a statement, with no ORM).

The caller owns the transaction: a change and its outbox event are added to one session
and committed together. Writers first touch the image's row (insert or update), so two
requests on one image serialise on the database's row or write lock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from darkroom.catalog import prepared
from darkroom.catalog.metadata import Facts
from darkroom.catalog.models import (
    Image, ImageTag, ImageVersion, Job, OutboxEvent, Rendition, new_id, utcnow, workflow_id,
)
from darkroom.engine.formats import MIME
from darkroom.errors import BadRequest, Conflict, NotFound

MAX_LIMIT = 100
MAX_TAGS = 32
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")
_IMAGES = Image.__table__
_INSERT_IMAGE, _INSERT_TAG = insert(_IMAGES), insert(ImageTag.__table__)
_INSERT_EVENT = insert(OutboxEvent.__table__)
_INSERT_VERSION = insert(ImageVersion.__table__).returning(ImageVersion.__table__.c.id)
_LOCK_KEY = text("SELECT pg_advisory_xact_lock(:lock)")
_LOCK_IMAGE = update(_IMAGES).where(_IMAGES.c.id == bindparam("_id")).values(
    updated_at=_IMAGES.c.updated_at)
_SET_CURRENT = update(_IMAGES).where(_IMAGES.c.id == bindparam("_id")).values(
    version=bindparam("_number"), status="ready", updated_at=bindparam("_now"))


@dataclass(frozen=True)
class ImageQuery:
    """Filters of `GET /v1/images`; results come in key order, `cursor` after the last."""

    prefix: str = ""
    format: str | None = None
    status: str | None = None
    tag: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = 50
    cursor: str | None = None


def parse_tags(values: list[str]) -> list[str]:
    """Comma-separated tags, each 1-64 of letters, digits and `._:/-`; at most 32."""
    tags = sorted({t.strip() for v in values for t in v.split(",") if t.strip()})
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"at most {MAX_TAGS} tags", "bad_tag")
    for tag in tags:
        if not _TAG.match(tag):
            raise BadRequest(f"bad tag {tag[:70]!r}: 1-64 letters, digits and ._:/-", "bad_tag")
    return tags


def lock_key(db: Session | Connection, key: str) -> None:
    """Hold `key` until the transaction ends against any other transaction that writes
    its object and locks it too (an upload, a pipeline's copy), so that the two never
    interleave. On PostgreSQL, an advisory lock on the key's hash; SQLite has one write
    lock that writing transactions take in turn, so there the caller only has to have
    written already."""
    bind = db.get_bind() if isinstance(db, Session) else db
    if bind.dialect.name == "postgresql":
        lock = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        db.execute(_LOCK_KEY, {"lock": lock})


def lock_image(db: Session | Connection, image_id: str) -> None:
    """Hold image `image_id`'s row, unchanged, until the transaction ends, against every
    other that writes it (a replace, a delete, an on-demand run, a retry) or locks it (a
    sweep of what its stopped jobs left, `pipelines.sweep.discard`). Taken before any job
    row of the image, as every writer does. On SQLite, the one write lock."""
    prepared.execute(db, _LOCK_IMAGE, {"_id": image_id})


def claim_new(db: Session | Connection, key: str, tags: list[str], image_id: str) -> Image:
    """Insert the row of image `image_id` for `key`; Conflict(image_exists) if the key is
    catalogued.

    The key's lock (`lock_key`) and the insert are the transaction's first statements, so
    a concurrent upload of the same key waits for this one to end and then fails on the
    unique key (no stale read), and a copy to the key comes wholly before or after. An
    upload's rows are written by plain INSERTs, the returned entities are not the
    session's: building the ORM's flush costs more than running it (uploads are hot).
    The row names version 1 current already: the upload adds it (`add_version(first=True)`)
    in the same transaction, so no reader sees the one without the other."""
    now = utcnow()
    values = {"id": image_id, "key": key, "status": "ready", "version": 1,
              "created_at": now, "updated_at": now}
    lock_key(db, key)
    try:
        prepared.execute(db, _INSERT_IMAGE, values)
    except IntegrityError:
        raise Conflict(f"an image with key {key!r} exists: PUT /v1/images/{{id}} replaces it",
                       "image_exists") from None
    if tags:
        db.execute(_INSERT_TAG, [{"image_id": values["id"], "tag": t} for t in tags])
    return Image(**values, tags=[ImageTag(tag=t) for t in tags])


def claim_existing(session: Session, image_id: str) -> Image:
    """Lock the image's row by updating it first; NotFound(image_not_found) if absent."""
    touched = session.execute(update(Image).where(Image.id == image_id)
                              .values(updated_at=utcnow()))
    if touched.rowcount == 0:
        raise NotFound(f"no image {image_id!r}", "image_not_found")
    return session.get_one(Image, image_id, populate_existing=True)


def add_version(db: Session | Connection, image: Image, facts: Facts, sha256: str,
                size: int, etag: str, first: bool = False) -> ImageVersion:
    """Record new bytes of `image` as its next, current version; or, `first`, as the
    version 1 that `claim_new` named current."""
    header = facts.header
    values = {"image_id": image.id, "number": 1 if first else image.version + 1,
              "sha256": sha256, "bytes": size, "format": header.format,
              "width": header.width, "height": header.height, "pages": header.pages,
              "alpha": header.alpha, "orientation": header.orientation, "icc": header.icc,
              "exif": facts.exif, "colours": facts.colours, "blurhash": facts.blurhash,
              "phash": facts.phash, "storage_key": image.key, "etag": etag,
              "created_at": utcnow()}
    version = ImageVersion(id=prepared.execute(db, _INSERT_VERSION, values).scalar_one(),
                           **values)
    if first:
        return version
    now = utcnow()
    prepared.execute(db, _SET_CURRENT, {"_id": image.id, "_number": version.number, "_now": now})
    for name, value in (("version", version.number), ("status", "ready"), ("updated_at", now)):
        set_committed_value(image, name, value)  # as written: nothing left to flush
    return version


def add_event(db: Session | Connection, kind: str, subject: str, payload: dict,
              event_id: str | None = None) -> OutboxEvent:
    """Queue an event in the outbox, inside the caller's transaction."""
    now = utcnow()
    values = {"id": event_id or new_id(), "type": kind, "subject": subject,
              "payload": payload, "created_at": now, "attempts": 0, "next_attempt_at": now}
    prepared.execute(db, _INSERT_EVENT, values)
    return OutboxEvent(**values)


def stop_jobs(session: Session, image_id: str, reason: str) -> list[str]:
    """Cancel the image's unfinished jobs; the workflow ids to cancel after the commit."""
    now = utcnow()
    stopped = session.execute(
        update(Job).where(Job.image_id == image_id, Job.status.in_(("queued", "running")))
        .values(status="cancelled", error=reason, finished_at=now, updated_at=now)
        .returning(Job.id, Job.run).execution_options(synchronize_session=False))
    return [workflow_id(job_id, run) for job_id, run in stopped]


def get_image(session: Session, image_id: str) -> tuple[Image, ImageVersion]:
    """The image and its current version; NotFound(image_not_found)."""
    row = session.execute(_with_current().where(Image.id == image_id)).first()
    if row is None:
        raise NotFound(f"no image {image_id!r}", "image_not_found")
    return row[0], row[1]


def list_images(session: Session, query: ImageQuery) -> tuple[list[tuple[Image, ImageVersion]],
                                                             str | None]:
    """One page of images matching `query`, and the cursor of the next page (or None)."""
    statement = _with_current()
    if query.prefix:
        statement = statement.where(Image.key.startswith(query.prefix, autoescape=True))
    if query.format:
        statement = statement.where(ImageVersion.format == query.format)
    if query.status:
        statement = statement.where(Image.status == query.status)
    if query.tag:
        statement = statement.where(Image.tags.any(ImageTag.tag == query.tag))
    if query.created_after:
        statement = statement.where(Image.created_at >= query.created_after)
    if query.created_before:
        statement = statement.where(Image.created_at < query.created_before)
    if query.cursor:
        statement = statement.where(Image.key > decode_cursor(query.cursor))
    limit = max(1, min(query.limit, MAX_LIMIT))
    rows = [(r[0], r[1]) for r in session.execute(statement.order_by(Image.key)
                                                   .limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1][0].key) if more else None


def delete_image(session: Session, image: Image) -> None:
    """Remove the image with its tags, versions, renditions and jobs (cascading)."""
    session.delete(image)
    session.flush()


def _with_current():
    return select(Image, ImageVersion).join(ImageVersion, and_(
        ImageVersion.image_id == Image.id, ImageVersion.number == Image.version))


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": key}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The key a cursor points after; BadRequest(bad_cursor) for anything else."""
    try:
        if len(cursor) > 2048:
            raise ValueError
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        key = data["after"]
        if not isinstance(key, str):
            raise ValueError
        return key
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadRequest("cursor is not one this server gave", "bad_cursor") from None


def summary(image: Image, version: ImageVersion) -> dict:
    """What `GET /v1/images` lists for one image."""
    return {
        "id": image.id, "key": image.key, "status": image.status, "version": image.version,
        "format": version.format, "mime": MIME.get(version.format, "application/octet-stream"),
        "width": version.width, "height": version.height, "pages": version.pages,
        "alpha": version.alpha,
        "bytes": version.bytes, "sha256": version.sha256,
        "tags": sorted(t.tag for t in image.tags),
        "created_at": image.created_at.isoformat(), "updated_at": image.updated_at.isoformat(),
    }


def detail(session: Session, image: Image, version: ImageVersion, new_version: bool = False,
           jobs: list[Job] | None = None) -> dict:
    """What `GET /v1/images/{id}` answers: the summary, descriptors, renditions and jobs.
    A `new_version` (written in this transaction) has no renditions to read; `jobs`, when
    given, are all the image's jobs (a new image's), newest last."""
    renditions = [] if new_version else session.scalars(select(Rendition).where(
        Rendition.version_id == version.id).order_by(Rendition.id)).all()
    jobs = jobs[::-1] if jobs is not None else session.scalars(
        select(Job).where(Job.image_id == image.id)
        .order_by(Job.created_at.desc()).limit(MAX_LIMIT)).all()
    return {
        **summary(image, version),
        "exif": version.exif, "colours": version.colours, "blurhash": version.blurhash,
        "phash": version.phash,
        "renditions": [{"name": r.name, "plan_hash": r.plan_hash, "key": r.storage_key,
                        "format": r.format, "bytes": r.bytes, "width": r.width,
                        "height": r.height} for r in renditions],
        "jobs": [{"id": j.id, "pipeline": j.pipeline, "version": j.version, "status": j.status,
                  "trigger": j.trigger, "run": j.run, "error": j.error} for j in jobs],
    }
