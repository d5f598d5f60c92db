"""The storage protocol: a flat namespace of keys holding bytes, written atomically."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from darkroom.errors import BadRequest, NotFound

_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
TEMP_NAME = re.compile(r"^\..*\.[0-9a-f]{32}\.tmp$")  # a write under way (local storage)
MAX_KEY_LENGTH = 1024
MAX_SEGMENT = 200  # bytes: a write's temp name adds at most 55 (see storage.temps)


@dataclass(frozen=True)
class ObjectInfo:
    """What a head() tells: size in bytes and a version tag that changes on every write."""

    key: str
    size: int
    etag: str
    modified: float  # unix seconds


class BlockingStorage(Protocol):
    """The calls a worker thread (a transaction's, a pipeline step's) makes on storage,
    done in that thread: the same meaning as `Storage`'s, without a hop to an event loop
    and back, which costs more CPU than writing a small file."""

    def get(self, key: str) -> bytes: ...

    def get_if_match(self, key: str, etag: str) -> bytes | None:
        """The object's bytes if it is still the one whose `etag` a write answered; None
        once it was written again or deleted (checked in the read itself)."""

    def put(self, key: str, data: bytes, content_type: str | None = None,
            sweep: bool = False) -> ObjectInfo: ...

    def put_file(self, key: str, source: Path, content_type: str | None = None,
                 move: bool = False) -> ObjectInfo: ...

    def delete(self, key: str) -> None: ...

    def head(self, key: str) -> ObjectInfo:
        """What `Storage.head` tells (NotFound if no object is stored at `key`)."""


class Storage(Protocol):
    """A bucket of objects. Every method validates `key` with `check_key` first;
    `blocking` makes the same calls from a worker thread."""

    blocking: BlockingStorage

    async def get(self, key: str) -> bytes:
        """The whole object; raises NotFound."""

    async def head(self, key: str) -> ObjectInfo:
        """Size and version without the body; raises NotFound."""

    async def put(self, key: str, data: bytes, content_type: str | None = None,
                  sweep: bool = False) -> ObjectInfo:
        """Write atomically: readers see the old object or the new one, never a part.
        `sweep` first removes what writes of `key` cut short by a crash left behind
        (temporary files of writers that are gone; a write under way is left alone)."""

    async def put_file(self, key: str, source: Path, content_type: str | None = None,
                       move: bool = False) -> ObjectInfo:
        """Write the local file `source` under `key` as atomically as `put`, streaming it
        (never the whole file in memory); the file itself is left in place, unless `move`
        lets the backend take it over (local disk renames it into place on the same
        filesystem, instead of writing it again): then the caller must not use it again."""

    async def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, in no promised order."""

    async def sweep(self, folder: str) -> None:
        """Remove what writers left behind under `folder/` that no object holds: on local
        disk, temp files of writes cut short and the folders then empty (a delete does
        this for its own key's folder; this reaches those that never held an object).
        An object store has nothing of the kind (a cut-short put leaves no object)."""

    async def abort_stale_uploads(self, before: datetime,
                                  going_on: Callable[[], bool] = lambda: True) -> int:
        """Abort the multipart uploads begun before `before` and never completed (a process
        killed mid-put leaves them: unseen, yet stored and billed), while `going_on()`; how
        many. Local disk keeps no parts apart (a write cut short leaves a temp file that
        `sweep` and the key's next write or delete remove): 0."""

    async def ping(self) -> None:
        """Raise StorageError when the backend cannot be reached (for /readyz)."""


def check_key(key: str) -> str:
    """Return `key` if it is a safe relative key, else raise BadRequest(bad_key).

    Refused: empty, over 1024 chars, absolute, `.`/`..` or empty segments, backslashes and
    control characters. The rule is the same for every backend, so a key that works on
    local disk works on S3 and no key can leave the storage root.
    """
    if not key or len(key) > MAX_KEY_LENGTH:
        raise BadRequest("key must be 1-1024 characters", "bad_key")
    if key.startswith("/") or _BAD_CHARS.search(key):
        raise BadRequest(f"bad key {key!r}: absolute or with forbidden characters", "bad_key")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise BadRequest(f"bad key {key!r}: empty, '.' or '..' segment", "bad_key")
    return key


def check_new_key(key: str) -> str:
    """`check_key`, no segment longer than `MAX_SEGMENT` bytes (local storage writes a
    temp file named after it first, in at most 255), and none named as local storage
    names a write under way (`.<name>.<...>.<32 hex>.tmp`: listing never shows such an
    object, and a delete could take it for a writer's leftover). Every write checks it,
    on every backend; an object written at such a key before is still read and deleted."""
    parts = check_key(key).split("/")
    if any(len(part.encode()) > MAX_SEGMENT for part in parts):
        raise BadRequest(f"bad key {key[:80]!r}...: a segment over {MAX_SEGMENT} bytes",
                         "bad_key")
    if any(TEMP_NAME.match(part) for part in parts):
        raise BadRequest(f"bad key {key!r}: named as local storage names a write under way",
                         "bad_key")
    return key


def exists(blocking: BlockingStorage, key: str) -> bool:
    """Whether an object is stored at `key` (a metadata request, no read)."""
    try:
        blocking.head(key)
    except NotFound:
        return False
    return True


async def drop_folder(storage: Storage, folder: str, keep: str | None = None) -> None:
    """Delete every object under `folder` (but those whose name there starts with
    `keep`), then sweep what no object held."""
    async for info in storage.list(folder):
        if keep is None or not info.key[len(folder):].startswith(keep):
            await storage.delete(info.key)
    await storage.sweep(folder.rstrip("/"))
