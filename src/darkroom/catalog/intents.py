"""An upload's intent, written down before its transaction stores anything, so that a
process killed between its storage writes and its commit leaves nothing behind.

An upload stores the new image's object (and its head start, under the image's rendition
folder) inside the transaction that catalogues it; a failure rolls both back, but a
process killed after a put and before the commit could not. So, first, the upload writes
an intent file in the data dir's `tmp` folder (the key, the image's id, the checksum),
locks it (`flock`) for as long as the upload lasts and removes it once the transaction
ended either way. An intent file that nobody holds was left by a process killed
mid-upload: `settle` (at every server start) looks the key up, holding it as an upload
does: catalogued under that image, the upload committed and stands; otherwise its object
(if it still holds the upload's bytes) and the image's rendition folder are deleted. The
lock is the kernel's, so the data dir must be on a local filesystem, as for staged files;
a host that never starts again leaves its intents unsettled.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from darkroom.catalog import repository
from darkroom.catalog.models import Image
from darkroom.errors import DarkroomError, NotFound, StorageError
from darkroom.pipelines.steps import RENDITIONS_PREFIX
from darkroom.storage import Storage
from darkroom.storage.temps import STALE_S

log = structlog.get_logger("darkroom.catalog")
# A write that changes nothing: on SQLite it takes the one write lock, as an upload has.
_HOLD = update(Image).where(Image.key == "").values(updated_at=Image.updated_at)


@dataclass(frozen=True)
class Entry:
    """What an upload is about to store: `key`'s object with checksum `sha256`, for the
    new image `image_id`."""

    key: str
    image_id: str
    sha256: str


class Intent:
    """An intent file, locked by this process until `close` removes it."""

    def __init__(self, path: Path, file) -> None:
        self.path, self.file = path, file

    def close(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self.file.close()


def intend(folder: Path, entry: Entry) -> Intent:
    """Write `entry` down, durably, in `folder` and lock it (see the module)."""
    name = f"intent-{uuid.uuid4().hex}"
    fresh, path = folder / f"{name}.new", folder / f"{name}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        file = os.fdopen(os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), "r+b")
    except OSError as error:
        raise StorageError(f"cannot write the upload's intent: {error}") from error
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        file.write(json.dumps(entry.__dict__).encode())
        file.flush()
        os.fsync(file.fileno())
        os.rename(fresh, path)  # only ever seen locked under its final name
        _sync_folder(folder)
    except OSError as error:
        file.close()
        fresh.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        raise StorageError(f"cannot write the upload's intent: {error}") from error
    return Intent(path, file)


def left(folder: Path) -> Iterator[tuple[Intent, Entry | None]]:
    """The intents in `folder` that no process holds, each locked by this one now, with
    its entry (None if unreadable). Files of a writer killed before it locked them go."""
    for path in sorted(folder.glob("intent-*.new")):
        try:
            if time.time() - path.lstat().st_mtime > STALE_S:
                path.unlink()  # never renamed: nothing was stored after it
        except FileNotFoundError:
            continue
    for path in sorted(folder.glob("intent-*.json")):
        try:
            file = open(path, "r+b")
        except FileNotFoundError:
            continue  # its upload ended meanwhile
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            continue  # an upload under way
        try:
            entry = Entry(**json.loads(file.read()))
        except (ValueError, TypeError):
            entry = None
        yield Intent(path, file), entry


async def settle(folder: Path, storage: Storage,
                 transact: Callable[[Callable[[Session], bool]], Awaitable[bool]]) -> int:
    """Undo what the uploads of killed processes stored without committing (see the
    module); how many intents were settled. `transact` runs its work in one catalog
    transaction. An intent whose storage or catalog fails stays for the next start."""
    settled = 0
    for intent, entry in left(folder):
        try:
            if entry is not None and not await transact(lambda s, e=entry: _keep(s, storage, e)):
                await _drop_folder(storage, f"{RENDITIONS_PREFIX}{entry.image_id}/")
                log.info("upload_undone", key=entry.key, image_id=entry.image_id)
            intent.close()
            settled += 1
        except DarkroomError as error:
            intent.file.close()
            log.warning("upload_intent_not_settled", path=str(intent.path),
                        error=error.message)
    return settled


def _keep(session: Session, storage: Storage, entry: Entry) -> bool:
    """Whether `entry`'s upload committed; if not, delete its object unless another's
    bytes replaced it. Holds the key as an upload does, so no upload of it interleaves."""
    repository.lock_key(session, entry.key)
    session.execute(_HOLD)
    holder = session.scalar(select(Image.id).where(Image.key == entry.key))
    if holder == entry.image_id:
        return True
    if holder is None:
        try:
            data = storage.blocking.get(entry.key)
        except NotFound:
            return False
        if hashlib.sha256(data).hexdigest() == entry.sha256:
            storage.blocking.delete(entry.key)
    return False


async def _drop_folder(storage: Storage, folder: str) -> None:
    """Delete every object under `folder` and sweep what no object held."""
    async for info in storage.list(folder):
        await storage.delete(info.key)
    await storage.sweep(folder.rstrip("/"))


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
