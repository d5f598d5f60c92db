"""Uploads, replacements and deletions: bytes in storage and rows in the catalog together.

Each write runs in one database transaction that first claims the image's row, then
writes the object, then adds the version and its outbox event. If anything fails after
the object was written, the object is deleted again, so a failed upload leaves nothing;
an upload first writes down its intent, so that one killed before its commit leaves
nothing either once `intents.settle` has run. A head start (the rendition an upload makes
for its pipelines from the decode that gives its descriptors, see `steps.head_start`) is
stored in the same transaction, best effort. Storage calls made inside a transaction go
through `storage.blocking`, on the transaction's thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import structlog
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from darkroom.catalog import head_starts, idempotency, intents, repository
from darkroom.catalog.head_starts import Prerender
from darkroom.catalog.metadata import Facts, describe
from darkroom.catalog.transactions import Undo, transaction
from darkroom.catalog.models import Image, ImageVersion, Job, Rendition, new_id
from darkroom.config import Limits
from darkroom.engine.formats import EXTENSION, MIME
from darkroom.engine.load import Header
from darkroom.errors import BadRequest, CatalogError, Conflict, DarkroomError, NotFound
from darkroom.pipelines import queue
from darkroom.pipelines.definition import Pipeline
from darkroom.pipelines.queue import JobQueue
from darkroom.pipelines.steps import RENDITIONS_PREFIX
from darkroom.plan.model import EditPlan
from darkroom.storage import Storage, drop_folder, exists

if TYPE_CHECKING:
    from darkroom.server.pool import RenderPool

log = structlog.get_logger("darkroom.catalog")
T = TypeVar("T")
DB_THREADS = 8

@dataclass(frozen=True)
class Staged:
    """An upload in a local file, with its checksum and size. `owned`: the file is the
    catalog's (received into a temporary file), so storage may take it over instead of
    copying it; a caller's own file (the CLI's) is only ever read."""

    path: Path
    sha256: str
    size: int
    owned: bool = False


class Catalog:
    """The catalog's writes and reads, over one engine, one storage and the engine pool.

    `invalidate(key)` is awaited after a source changes or goes (the result cache).
    """

    def __init__(self, engine: Engine, storage: Storage, pool: RenderPool, limits: Limits,
                 invalidate: Callable[[str], Awaitable[None]] | None = None,
                 queue: JobQueue | None = None, prerender: Prerender | None = None,
                 journal: Path | None = None) -> None:
        self.engine = engine
        self.queue = queue
        self.storage = storage
        self.pool = pool
        self.limits = limits
        self.invalidate = invalidate
        self.prerender = prerender  # an in-process worker's `Runtime.prerender`, if any
        self.journal = journal  # where writes put their intents (see `intents`)
        # Database work (with the storage calls inside its transactions) has its own
        # threads, so that it never fills the loop's default executor.
        self._threads = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="catalog")

    def close(self) -> None:
        """Stop the database threads and close the engine's (and the queue's) connections."""
        self._threads.shutdown(wait=True)
        if self.queue is not None:
            self.queue.close()
        self.engine.dispose()

    async def upload(self, staged: Staged, key: str | None, tags: list[str],
                     idempotency_key: str | None = None) -> tuple[dict, bool]:
        """Catalog a new image; returns its detail and whether it is a replayed answer."""
        if key is not None and key.startswith(RENDITIONS_PREFIX):
            raise BadRequest(f"keys under {RENDITIONS_PREFIX} are darkroom's own",
                             "reserved_key")
        request = hashlib.sha256(json.dumps([key, sorted(tags), staged.sha256]).encode()
                                 ).hexdigest()
        if idempotency_key:
            replay = await self._run(lambda s, _: idempotency.recall(s, idempotency_key, request))
            if replay is not None:
                return replay, True
        stem = uuid.uuid4().hex[:16]  # of the key, when none is given

        def key_for(fmt: str) -> str:
            return key or f"{stem}.{EXTENSION.get(fmt, fmt)}"

        facts = await self._describe(staged, await self._head_start(key_for))
        key, image_id = key_for(facts.header.format), new_id()
        held: list[intents.Intent] = []

        def write(session: Session, undo: Undo) -> _Written:
            image = repository.claim_new(session.connection(), key, tags, image_id)
            if self.journal is not None:  # the key is held: nothing else writes it now
                self._intend(held, intents.Entry(key, image_id, staged.sha256,
                                                 found=intents.stored_etag(self.storage, key)))
            body, fired, version = self._record(session, image, staged, facts,
                                                "image.uploaded", undo)
            if idempotency_key:
                idempotency.remember(session, idempotency_key, request, body)
            made_key = head_starts.key(image, staged.sha256, facts.made, fired)
            if made_key is not None and not head_starts.store(self.storage, made_key,
                                                              facts.made[1], undo):
                made_key = None
            return _Written(body, made_key, [pipeline for _, pipeline in fired], version)

        def then(written: _Written) -> None:
            stored = {} if written.made_key is None else {written.made_key: facts.made[1]}
            if self.prerender is not None:
                head_starts.prerender(self.prerender, self.storage, self.limits,
                                      written.pipelines, written.version, facts, stored)

        try:
            body = (await self._run(write, then=then, held=held)).body
        except (Conflict, CatalogError):
            if not idempotency_key:
                raise
            replay = await self._run(lambda s, _: idempotency.recall(s, idempotency_key, request))
            if replay is None:  # not a race with the same request: the error stands
                raise
            return replay, True
        return body, False

    async def replace(self, image_id: str, staged: Staged) -> dict:
        """Store new bytes for an image as its next version; old derivatives are dropped.
        If the new version cannot be recorded, the old bytes are put back (they are read
        first, within the size limit)."""
        facts = await self._describe(staged)
        superseded: list[str] = []
        blocking = self.storage.blocking
        held: list[intents.Intent] = []

        def write(session: Session, undo: Undo) -> dict:
            image = repository.claim_existing(session, image_id)
            key = image.key
            try:  # the current bytes, put back if the new version cannot be recorded
                previous: bytes | None = blocking.get(key)
            except NotFound:
                previous = None
            self._intend(held, intents.Entry(key, image_id, staged.sha256, "replace"),
                         previous)
            undo.append(lambda: blocking.put(key, previous) if previous is not None
                        else blocking.delete(key))
            _drop_renditions(session, image)
            superseded.extend(repository.stop_jobs(session, image.id, "superseded by a "
                                                   f"new version ({image.version + 1})"))
            return self._record(session, image, staged, facts, "image.replaced")[0]

        body = await self._run(write, held=held)
        await self._forget(body["key"], image_id, superseded, keep=staged.sha256[:16])
        return body

    async def delete(self, image_id: str, interrupted: bool = False) -> bool:
        """Delete the image's object, rows and derivatives, with an `image.deleted` event.
        `interrupted`: finish a deletion killed before its commit (see `intents`), only
        if the image is still catalogued and its object gone; whether it was deleted."""
        stopped: list[str] = []
        held: list[intents.Intent] = []

        def write(session: Session, _undo: Undo) -> str | None:
            try:
                image = repository.claim_existing(session, image_id)
            except NotFound:
                if interrupted:
                    return None
                raise
            key, version = image.key, image.version
            if interrupted and exists(self.storage.blocking, key):
                return None
            _drop_renditions(session, image)
            stopped.extend(repository.stop_jobs(session, image.id, "image deleted"))
            repository.delete_image(session, image)
            repository.add_event(session, "image.deleted", image_id,
                                 {"image_id": image_id, "key": key, "version": version})
            self._intend(held, intents.Entry(key, image_id, "", "delete"))
            for intent in held:  # a delete cannot be undone: if the object went, the next
                intent.final = True  # start finishes it even if this rolls back
            self.storage.blocking.delete(key)  # a storage failure rolls back
            return key

        key = await self._run(write, held=held)
        if key is not None:
            await self._forget(key, image_id, stopped)
        return key is not None

    async def settle(self) -> int:
        """Undo or finish the writes of killed processes that changed storage and never
        committed (see `intents`); how many were settled."""
        try:
            settled = 0 if self.journal is None else await intents.settle(
                self.journal, self.storage, self.transact,
                lambda image_id: self.delete(image_id, interrupted=True))
        except OSError as error:  # the folder itself: a server still starts
            log.warning("write_intents_not_settled", folder=str(self.journal),
                        error=str(error))
            return 0
        if settled:
            log.info("write_intents_settled", count=settled, folder=str(self.journal))
        return settled

    async def transact(self, work: Callable[[Session], T]) -> T:
        """`work` in one catalog transaction, on the database threads."""
        return await self._run(lambda session, _undo: work(session))

    async def ping(self) -> None:
        """Raise CatalogError when the database does not answer (for /readyz)."""
        await self._run(lambda session, _: session.execute(text("SELECT 1")).scalar())

    async def get(self, image_id: str) -> dict:
        return await self._run(lambda s, _: repository.detail(
            s, *repository.get_image(s, image_id)))

    async def list(self, query: repository.ImageQuery) -> dict:
        def read(session: Session, _undo: Undo) -> dict:
            rows, cursor = repository.list_images(session, query)
            return {"items": [repository.summary(*row) for row in rows], "next_cursor": cursor}

        return await self._run(read)

    def _record(self, session: Session, image: Image, staged: Staged, facts: Facts,
                kind: str, undo: Undo | None = None
                ) -> tuple[dict, list[tuple[Job, Pipeline]], ImageVersion]:
        """Write the object, then the version and its event, and fire the pipelines; the
        image's detail, the jobs fired and the version. With `undo`, a later failure
        deletes the object again."""
        key, db = image.key, session.connection()  # plain statements: no ORM on the way
        info = self.storage.blocking.put_file(key, staged.path, MIME[facts.header.format],
                                              move=staged.owned)
        if undo is not None:
            undo.append(lambda: self.storage.blocking.delete(key))
        version = repository.add_version(db, image, facts, staged.sha256, staged.size,
                                         info.etag, first=kind == "image.uploaded")
        repository.add_event(db, kind, image.id, _payload(image, version))
        fired = [] if self.queue is None else queue.fire(db, self.queue, image, version,
                                                          kind.removeprefix("image."))
        return repository.detail(session, image, version, new_version=True, jobs=[
            j for j, _ in fired] if kind == "image.uploaded" else None), fired, version

    def _intend(self, held: list[intents.Intent], entry: intents.Entry,
                previous: bytes | None = None) -> None:
        """Write `entry` down before storage is changed (see `intents`), into `held`."""
        if self.journal is not None:
            held.append(intents.intend(self.journal, entry, previous))

    async def _head_start(self, key_for: Callable[[str], str]
                          ) -> Callable[[Header], EditPlan | None] | None:
        """For `describe`: the rendition an upload (its key by format) may make for the
        jobs it will fire (`steps.head_start`)."""
        if self.queue is None:
            return None
        if self.queue.pipelines is None:  # once: each upload's `fire` reads them again
            await self._run(lambda session, _: queue.read_pipelines(session.connection(),
                                                                     self.queue))
        return lambda header: self.queue.head_start("uploaded", key_for(header.format),
                                                    header)

    async def _describe(self, staged: Staged, pick: Callable[[Header], EditPlan | None] | None
                        = None) -> Facts:
        return await self.pool.run(describe, staged.path, self.limits, pick,
                                   timeout=self.limits.time_budget_s)

    async def _forget(self, key: str, image_id: str, workflows: list[str],
                      keep: str | None = None) -> None:
        """Best effort after the commit: the workflows of jobs stopped (their rows already
        say so), the image's renditions (all, or all but those of the source checksum
        prefix `keep`) and the cached results of `key`. The whole rendition folder is
        swept, so a rendition a stopped run stored just before the commit goes too; one
        stored after it is deleted when its attempt ends and finds the job stopped."""
        for workflow in workflows if self.queue is not None else []:
            try:
                await asyncio.to_thread(self.queue.cancel, workflow)
            except Exception as error:  # the job row says cancelled: its run stops anyway
                log.warning("workflow_cancel_failed", workflow=workflow, error=str(error))
        try:
            await drop_folder(self.storage, f"{RENDITIONS_PREFIX}{image_id}/", keep)
            if self.invalidate is not None:
                await self.invalidate(key)
        except DarkroomError as error:
            log.warning("derivative_cleanup_failed", key=key, error=error.message)

    async def _run(self, work: Callable[[Session, Undo], T],
                   then: Callable[[T], None] | None = None,
                   held: list[intents.Intent] | None = None) -> T:
        """`work` in one transaction on the database threads; `then(result)` after the
        commit, on the same thread. `held`, the intents `work` writes, are closed there
        once the transaction has ended, even if the caller was cancelled meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, transaction, self.engine, work,
                                          then, held)


class _Written(NamedTuple):
    """What an upload's transaction wrote: the answer, where its head start goes (None if
    no job fired wants it), the pipelines fired and the version."""

    body: dict
    made_key: str | None
    pipelines: list[Pipeline]
    version: ImageVersion


def _drop_renditions(session: Session, image: Image) -> None:
    """Delete the rendition rows of every version of `image` (objects go after commit)."""
    for rendition in session.scalars(select(Rendition).join(ImageVersion).where(
            ImageVersion.image_id == image.id)):
        session.delete(rendition)


def _payload(image: Image, version: ImageVersion) -> dict:
    return {"image_id": image.id, "key": image.key, "version": version.number,
            "sha256": version.sha256, "format": version.format, "bytes": version.bytes,
            "width": version.width, "height": version.height}
