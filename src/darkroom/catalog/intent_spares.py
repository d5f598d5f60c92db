"""Spare intent files: a closed intent's file kept, empty of meaning, for the next write.

Every upload wrote an intent file and removed it once its transaction ended. A removed
file is not free of cost: ext4 without a journal skips the inode of a file removed in the
last 1 to 6 minutes whenever it makes a new one, one lookup each, so a steady stream of
removals made every new file on the filesystem dearer (the sources, the renditions, the
staged uploads). So a process renames a closed intent to
`spare-<id>.intent`, keeps it open and locked, and writes its next intent into it before
renaming it back to an intent's name: no file made, none removed.

A spare's bytes mean nothing (an intent's, left from before, or one being written): it
becomes an intent only by its rename, once complete and synced. `intents.left` removes
the spares that nobody holds (a killed process's); a process removes its own at exit. At
most `KEPT` are kept in all, the oldest removed first; a forked child drops (without
removing) the ones it inherited, which stay its parent's.
"""

from __future__ import annotations

import atexit
import os
import threading
import uuid
from collections import deque
from pathlib import Path
from typing import BinaryIO

KEPT = 8  # more than the writes a process has under way at once (its catalog threads)
PATTERN = "spare-*.intent"


class Spares:
    """This process's spare intent files: (folder, path, open and locked file)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: deque[tuple[Path, Path, BinaryIO]] = deque()

    def take(self, folder: Path) -> tuple[Path, BinaryIO] | None:
        """A spare in `folder`, emptied, now the caller's; None if there is none (one
        removed from the folder meanwhile is dropped)."""
        while True:
            with self._lock:
                found = next((s for s in self._idle if s[0] == folder), None)
                if found is None:
                    return None
                self._idle.remove(found)
            _, path, file = found
            try:
                if os.fstat(file.fileno()).st_nlink:
                    os.ftruncate(file.fileno(), 0)
                    file.seek(0)
                    return path, file
            except OSError:
                pass
            file.close()  # gone or unusable: the next, or a new file

    def keep(self, folder: Path, intent: Path, file: BinaryIO) -> bool:
        """Make `intent` (this process's, its transaction ended, `file` open and locked)
        a spare; False (nothing done) if it cannot be renamed."""
        path = folder / f"spare-{uuid.uuid4().hex}.intent"
        try:
            os.rename(intent, path)
        except OSError:
            return False
        with self._lock:
            self._idle.append((folder, path, file))
            oldest = self._idle.popleft() if len(self._idle) > KEPT else None
        if oldest is not None:
            _remove(oldest)
        return True

    def remove_all(self) -> None:
        """Remove this process's spares (at exit)."""
        with self._lock:
            idle, self._idle = list(self._idle), deque()
        for spare in idle:
            _remove(spare)

    def drop_inherited(self) -> None:
        """In a forked child: forget the parent's spares, closing its copies only."""
        self._lock = threading.Lock()  # (the parent's may have been held at the fork)
        idle, self._idle = self._idle, deque()
        for _, _, file in idle:
            file.close()


def _remove(spare: tuple[Path, Path, BinaryIO]) -> None:
    _, path, file = spare
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # removed by the next start's `intents.left`
    finally:
        file.close()


spares = Spares()
atexit.register(spares.remove_all)
os.register_at_fork(after_in_child=spares.drop_inherited)
