"""The file an upload is streamed into before it is catalogued, and the sweep of those a
process killed mid-upload left (its `finally` never ran).

The process receiving an upload holds a lock (`flock`) on its staged file for as long as
the upload lasts, and gives the file its `.part` name only once locked: a `staged-*.part`
file that can be locked is nobody's. The lock is the kernel's, so this holds across
processes, containers and pid namespaces on one host (the data dir must be on a local
filesystem). Files no lock protects (a `.new` one whose maker died before locking it, an
earlier version's `upload-*.part`) are swept once nobody has written them for `STALE_S`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
import uuid
from pathlib import Path

import structlog

from darkroom.catalog.service import Staged
from darkroom.errors import StorageError, TooLarge
from darkroom.storage.temps import STALE_S

log = structlog.get_logger("darkroom.images")


class StagedFile:
    """The locked temporary file, its running SHA-256 and size, bounded by `max_bytes`."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        name = f"staged-{uuid.uuid4().hex}"
        fresh, self.path = directory / f"{name}.new", directory / f"{name}.part"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            # any new file's mode (0666 less the umask): the upload is moved into storage
            self.file = os.fdopen(os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666),
                                  "wb")
        except OSError as error:
            raise StorageError(f"cannot stage the upload: {error}") from error
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX)
            os.rename(fresh, self.path)
        except OSError as error:
            self.file.close()
            fresh.unlink(missing_ok=True)
            raise StorageError(f"cannot stage the upload (a local filesystem with "
                               f"flock is needed): {error}") from error
        self.digest = hashlib.sha256()
        self.size = 0
        self.max_bytes = max_bytes

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise TooLarge(f"upload over {self.max_bytes} bytes", "source_too_large")
        self.digest.update(data)
        self.file.write(data)

    def staged(self) -> Staged:
        """What was received; the file stays open, and locked, until `discard`."""
        self.file.flush()
        return Staged(self.path, self.digest.hexdigest(), self.size, owned=True)

    def discard(self) -> None:
        """Remove the file (unless storage took it over), then let go of its lock."""
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self.file.close()


def sweep_parts(directory: Path) -> int:
    """Remove the staged uploads in `directory` that no process holds; how many. Errors
    are logged, never raised: they must not stop a server from starting."""
    swept = 0
    for path in sorted(directory.glob("*-*.*")):
        locked = path.name.startswith("staged-") and path.suffix == ".part"
        if not (locked or _unguarded(path)):
            continue
        try:
            with open(path, "rb+") as part:  # a write lock needs a writable file on NFS
                try:
                    fcntl.flock(part.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # being received
                path.unlink()
                swept += 1
        except FileNotFoundError:
            continue  # its upload ended meanwhile
        except OSError as error:
            log.warning("staged_upload_not_swept", path=str(path), error=str(error))
    return swept


def _unguarded(path: Path) -> bool:
    """Whether `path` is a staged file that no lock protects (see the module), untouched
    for `STALE_S`."""
    if not (path.name.startswith("staged-") and path.suffix == ".new"
            or path.name.startswith("upload-") and path.suffix == ".part"):
        return False
    try:
        return time.time() - path.lstat().st_mtime > STALE_S
    except FileNotFoundError:
        return False
