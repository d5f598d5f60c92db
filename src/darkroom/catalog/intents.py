"""A write's intent, written down before its transaction changes storage, so that a
process killed between its storage writes and its commit leaves nothing half done.

Uploads, replacements and deletions change storage inside the transaction that records
them; a failure rolls both back, but a process killed after the storage write and before
the commit could not. So, first, each writes an intent file in the data dir's `tmp`
folder (what it does, the key, the image's id, the checksum of the bytes it stores; a
replacement also the bytes it overwrites), locks it (`flock`) for as long as it lasts and
removes it once the transaction ended either way (its file kept for the process's next
write: see `intent_spares`). An intent file that nobody holds was left by a process killed
mid-write; `settle` (at every server start) holds the key or the image as the write did
and looks at the catalog: a write that committed stands. One that did not is undone or
finished:
- an upload: its object is deleted (if it holds the upload's bytes and is not the
  uncatalogued object the upload found there), and its image's rendition folder (its
  head start);
- a replacement: the bytes it overwrote are put back (if the object still holds its own);
- a deletion that deleted the object: it is finished, rows, event and renditions, as the
  client asked (one killed before that changed nothing).
The lock is the kernel's, so the data dir must be on a local filesystem, as for staged
files; a host that never starts again leaves its intents unsettled.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from darkroom.catalog import intent_spares, repository
from darkroom.catalog.models import Image, ImageVersion
from darkroom.engine.formats import MIME
from darkroom.errors import DarkroomError, NotFound, StorageError
from darkroom.pipelines.steps import RENDITIONS_PREFIX
from darkroom.storage import Storage, drop_folder
from darkroom.storage.temps import STALE_S

log = structlog.get_logger("darkroom.catalog")
# A write that changes nothing: on SQLite it takes the one write lock, as an upload has.
_HOLD = update(Image).where(Image.key == "").values(updated_at=Image.updated_at)


@dataclass(frozen=True)
class Entry:
    """What a write is about to do (`op`: upload, replace or delete) to image `image_id`'s
    object at `key`: store bytes with checksum `sha256` (none for a delete); a replace
    keeps the bytes it overwrites, if there were any (`previous`); an upload notes the
    object it found at the key, uncatalogued (`found`, its etag). `at`: when, in
    nanoseconds since the epoch (`time.time_ns`), to settle the newest first."""

    key: str
    image_id: str
    sha256: str
    op: str = "upload"
    previous: bool = False
    found: str | None = None  # an upload: the etag of the object it found at the key
    at: int = field(default_factory=time.time_ns)


class Intent:
    """An intent file, locked by this process until `close` removes it (its file a spare,
    if this process wrote it; and the bytes a replacement overwrites, kept beside it), or
    `release` leaves it to the next start.
    `final`: the change it names is made and cannot be undone (a delete's). `own`: this
    process wrote it, and its file becomes a spare when it closes (see `intent_spares`).
    `keeps`: whether bytes may be kept beside it."""

    def __init__(self, path: Path, file, own: bool = False, keeps: bool = True) -> None:
        self.path, self.file = path, file
        self.kept = path.with_suffix(".previous")
        self.final = False
        self.own, self.keeps = own, keeps

    def release(self) -> None:
        """Let go of it without removing it: `settle` decides at the next start."""
        self.file.close()

    def previous(self) -> bytes | None:
        """The bytes its replacement overwrote; None if there were none."""
        try:
            return self.kept.read_bytes()
        except FileNotFoundError:
            return None

    def close(self) -> None:
        spared = self.own and intent_spares.spares.keep(self.path.parent, self.path,
                                                        self.file)
        try:
            if not spared:
                self.path.unlink(missing_ok=True)
            if self.keeps:
                self.kept.unlink(missing_ok=True)
        finally:
            if not spared:
                self.file.close()


def intend(folder: Path, entry: Entry, previous: bytes | None = None) -> Intent:
    """Write `entry` down, durably, in `folder` and lock it (see the module), in a spare
    file of this process's if it has one (a new file if that one fails); `previous`, the
    bytes a replacement overwrites, are kept beside it first."""
    # not for a replacement: its kept bytes are left alone only beside a `.new` or `.json`
    spare = intent_spares.spares.take(folder) if previous is None else None
    if spare is not None:
        try:
            return _written(folder, entry, previous, spare)
        except StorageError:
            pass  # renamed or moved by hand, say
    return _written(folder, entry, previous, None)


def _written(folder: Path, entry: Entry, previous: bytes | None,
             spare: tuple[Path, BinaryIO] | None) -> Intent:
    path = folder / f"intent-{uuid.uuid4().hex}.json"
    try:
        if spare is None:
            fresh = path.with_suffix(".new")
            folder.mkdir(parents=True, exist_ok=True)
            # any new file's mode (0666 less the umask), as staged uploads: whoever settles
            # it may be another user (the CLI's intents, a server's)
            file = os.fdopen(os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666),
                             "r+b")
        else:
            fresh, file = spare
    except OSError as error:
        raise StorageError(f"cannot write the intent of an {entry.op}: {error}") from error
    intent = Intent(path, file, own=True, keeps=previous is not None)
    entry = replace(entry, previous=previous is not None)
    try:
        if spare is None:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        if previous is not None:
            _write_synced(intent.kept, previous)
        file.write(json.dumps(entry.__dict__).encode())
        file.flush()
        os.fsync(file.fileno())
        os.rename(fresh, path)  # only ever seen locked under its final name, complete
        _sync_folder(folder)
    except OSError as error:
        intent.own = False
        try:
            fresh.unlink(missing_ok=True)
            intent.close()
        except OSError:
            file.close()
        raise StorageError(f"cannot write the intent of an {entry.op}: {error}") from error
    return intent


def left(folder: Path) -> Iterator[tuple[Intent, Entry | None]]:
    """The intents in `folder` that no process holds, each locked by this one now, with
    its entry (None if unreadable), newest first. Files of a writer killed before its
    intent was complete go (once an hour old), kept bytes whose intent is gone, and the
    spares of processes gone."""
    for path in sorted(folder.glob("intent-*.new")):
        try:
            if time.time() - path.lstat().st_mtime > STALE_S:
                path.unlink()  # never renamed: nothing was stored after it
                path.with_suffix(".previous").unlink(missing_ok=True)
        except OSError as error:
            _unusable(path, error)
    for path in sorted(folder.glob("intent-*.previous")):  # its intent closed, or never was
        # `.new` first: a live intent is renamed from `.new` to `.json`, never back
        if not (path.with_suffix(".new").exists() or path.with_suffix(".json").exists()):
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                _unusable(path, error)
    for path in folder.glob(intent_spares.PATTERN):
        _remove_unheld(path)
    found = []
    for path in folder.glob("intent-*.json"):
        try:
            file = open(path, "rb")  # a lock needs no write access
        except OSError as error:
            _unusable(path, error)
            continue  # its write ended meanwhile, or another user's file
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(file.fileno()).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError(path)  # settled by another process meanwhile
        except (BlockingIOError, FileNotFoundError):
            file.close()
            continue  # a write under way, or settled
        try:
            entry = Entry(**json.loads(file.read()))
        except (ValueError, TypeError):
            entry = None
        found.append((Intent(path, file), entry))
    # newest first: an intent left by a write that came after another's left one, on the
    # same image, is settled before it (what the later one overwrote, the earlier stored)
    yield from sorted(found, key=lambda pair: -(pair[1].at if pair[1] else 0))


async def settle(folder: Path, storage: Storage,
                 transact: Callable[[Callable[[Session], object]], Awaitable[object]],
                 finish_delete: Callable[[str], Awaitable[bool]]) -> int:
    """Undo or finish the writes of killed processes that did not commit (see the module);
    how many intents were settled. `transact` runs its work in one catalog transaction;
    `finish_delete(image_id)` deletes an image whose object is gone already. An intent
    whose storage or catalog fails stays for the next start."""
    guard = await asyncio.to_thread(_settling, folder)  # one process settles at a time
    try:
        return await _settle_all(folder, storage, transact, finish_delete)
    finally:
        os.close(guard)


async def _settle_all(folder: Path, storage: Storage, transact, finish_delete) -> int:
    settled = 0
    for intent, entry in left(folder):
        try:
            if entry is not None:
                await _settle(entry, intent, storage, transact, finish_delete)
            intent.close()
            settled += 1
        except (DarkroomError, OSError) as error:
            intent.release()
            log.warning("write_intent_not_settled", path=str(intent.path),
                        error=getattr(error, "message", str(error)))
    return settled


async def _settle(entry: Entry, intent: Intent, storage: Storage, transact,
                  finish_delete) -> None:
    if entry.op == "upload":
        if not await transact(lambda session: _upload_stands(session, storage, entry)):
            await drop_folder(storage, f"{RENDITIONS_PREFIX}{entry.image_id}/")
            log.info("upload_undone", key=entry.key, image_id=entry.image_id)
    elif entry.op == "replace":
        previous = intent.previous()
        if await transact(lambda session: _put_back(session, storage, entry, previous)):
            log.info("replace_undone", key=entry.key, image_id=entry.image_id)
    elif entry.op == "delete" and await finish_delete(entry.image_id):
        log.info("delete_finished", key=entry.key, image_id=entry.image_id)


def _upload_stands(session: Session, storage: Storage, entry: Entry) -> bool:
    """Whether `entry`'s upload committed; if not, delete its object unless another's
    bytes replaced it. Holds the key as an upload does, so no upload of it interleaves."""
    repository.lock_key(session, entry.key)
    session.execute(_HOLD)
    holder = session.scalar(select(Image.id).where(Image.key == entry.key))
    if holder == entry.image_id:
        return True
    if holder is None and _written_since(storage, entry) and _holds(storage, entry):
        storage.blocking.delete(entry.key)  # (an object it overwrote is not restored)
    return False


def _put_back(session: Session, storage: Storage, entry: Entry, previous: bytes | None
              ) -> bool:
    """If `entry`'s replacement did not commit and its bytes are stored, put back what it
    overwrote (no object, if there was none); whether it did. Intents are settled newest
    first, so writes that did not commit are undone in the reverse order of their puts.
    Holds the image as a replacement does."""
    try:
        image = repository.claim_existing(session, entry.image_id)
    except NotFound:
        return False  # deleted since: nothing to put back
    current = session.execute(select(ImageVersion.sha256, ImageVersion.format).where(
        ImageVersion.image_id == image.id, ImageVersion.number == image.version)).first()
    if current is None or current.sha256 == entry.sha256 or not _holds(storage, entry):
        return False
    if not entry.previous:
        storage.blocking.delete(entry.key)
    elif previous is not None:
        storage.blocking.put(entry.key, previous, MIME.get(current.format))
    else:  # the file kept beside the intent is gone (removed by hand?): nothing to put
        log.warning("replace_not_undone", key=entry.key, image_id=entry.image_id)
        return False
    return True


def _written_since(storage: Storage, entry: Entry) -> bool:
    """Whether an object is at `entry.key` and is not the one the upload found there."""
    return stored_etag(storage, entry.key) not in (None, entry.found)


def stored_etag(storage: Storage, key: str) -> str | None:
    """The etag of the object stored at `key`, None if there is none."""
    try:
        return storage.blocking.head(key).etag
    except NotFound:
        return None


def end(held: list[Intent] | None, stands: bool = True, undone: bool = True) -> None:
    """End the intents of a transaction that has ended: removed if it `stands`
    (committed) or was `undone`; left to the next start otherwise, and those whose change
    cannot be undone (`final`) if it did not stand. One that cannot be removed is logged,
    and settled by the next start."""
    while held:
        intent = held.pop()
        try:
            if stands or (undone and not intent.final):
                intent.close()
            else:
                intent.release()
        except OSError as error:
            log.warning("write_intent_not_removed", path=str(intent.path), error=str(error))


def _holds(storage: Storage, entry: Entry) -> bool:
    """Whether the object at `entry.key` holds the bytes `entry` stored."""
    try:
        data = storage.blocking.get(entry.key)
    except NotFound:
        return False
    return hashlib.sha256(data).hexdigest() == entry.sha256


def _remove_unheld(path: Path) -> None:
    """Remove the spare intent file at `path` if no process holds it (see
    `intent_spares`)."""
    try:
        with open(path, "rb") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()
    except BlockingIOError:
        pass  # a live process's
    except OSError as error:
        _unusable(path, error)


def _unusable(path: Path, error: OSError) -> None:
    if not isinstance(error, FileNotFoundError):  # gone meanwhile: nothing to say
        log.warning("write_intent_not_settled", path=str(path), error=str(error))


def _settling(folder: Path) -> int:
    """A descriptor of `folder`, locked (waited for): processes that start together
    settle one after the other, each in the newest-first order of the intents it finds."""
    folder.mkdir(parents=True, exist_ok=True)
    guard = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
    except BaseException:
        os.close(guard)
        raise
    return guard


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
