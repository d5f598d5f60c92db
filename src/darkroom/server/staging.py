"""The file an upload is streamed into before it is catalogued, and the sweep of those a
process killed mid-upload left (its `finally` never ran).

A staged file is locked (`flock`) by the process receiving it for as long as the upload
lasts, and is given its `.part` name only once locked: a `.part` file that can be locked
is nobody's. The lock is the kernel's, so this holds across processes, containers and pid
namespaces on one host, where process ids say nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from pathlib import Path

import structlog

from darkroom.catalog.service import Staged
from darkroom.errors import TooLarge

log = structlog.get_logger("darkroom.images")


class StagedFile:
    """The locked temporary file, its running SHA-256 and size, bounded by `max_bytes`."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"upload-{uuid.uuid4().hex}"
        fresh = directory / f"{name}.new"
        # the mode of any new file (0666 less the umask): the upload is moved into storage
        descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        self.file = os.fdopen(descriptor, "wb")
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        self.path = directory / f"{name}.part"
        os.rename(fresh, self.path)
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
        self.path.unlink(missing_ok=True)
        self.file.close()


def sweep_parts(directory: Path) -> int:
    """Remove the staged uploads in `directory` that no process holds; how many. Errors
    are logged, never raised: they must not stop a server from starting."""
    swept = 0
    for path in directory.glob("upload-*.part"):
        try:
            with open(path, "rb") as part:
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
