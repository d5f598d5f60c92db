"""The temp files local storage writes beside a key, and how to tell those a writer left
behind (killed mid-write) from those being written.

A temp file is named `.{name}.{pid}-{place}.{uuid}.tmp`, where `place` names the writer's
host and pid namespace (so a key's segments may be `base.MAX_SEGMENT` bytes at most: the
temp name must fit in 255). A writer of this place is judged by its process id: gone, its
files are left over at once. A writer of another place (another container or host that
shares the folder, where its process id means nothing here), or a name without a place
(written by an earlier version), is judged by age: left over once nobody has written the
file for `STALE_S`, longer than any write takes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
import time
import uuid
from pathlib import Path

STALE_S = 3600.0
_OF_KEY = re.compile(r"([0-9]+)(?:-([0-9a-f]{8}))?\.[0-9a-f]{32}\.tmp$")  # after ".{name}."
_ANY = re.compile(r"^\..+\.([0-9]+)(?:-([0-9a-f]{8}))?\.[0-9a-f]{32}\.tmp$")


@functools.cache
def place() -> str:
    """This process's host (its kernel's boot id: host names repeat between machines)
    and pid namespace, in 8 hex digits."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # no /proc: the host's name is all there is
        boot, namespace = socket.gethostname(), ""
    return hashlib.sha256(f"{boot}/{namespace}".encode()).hexdigest()[:8]


def temp_for(path: Path) -> Path:
    """A new temp file's path beside `path`, named after this writer."""
    return path.with_name(f".{path.name}.{os.getpid()}-{place()}.{uuid.uuid4().hex}.tmp")


def sweep(path: Path) -> int:
    """Remove the temp files of `path` that writers left behind; how many."""
    prefix = f".{path.name}."
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:  # no folder yet: nothing left behind
        return 0
    gone = [name for name in names if name.startswith(prefix)
            and (found := _OF_KEY.match(name, len(prefix)))
            and _left_behind(path.parent / name, found)]
    for name in gone:
        (path.parent / name).unlink(missing_ok=True)
    return len(gone)


def left_over(folder: Path, name: str) -> bool:
    """Whether `name` in `folder` is a temp file (of any key) that its writer left behind."""
    found = _ANY.match(name)
    return found is not None and _left_behind(folder / name, found)


def _left_behind(path: Path, found: re.Match) -> bool:
    if found[2] == place():
        return not process_alive(int(found[1]))
    try:
        return time.time() - os.lstat(path).st_mtime > STALE_S
    except FileNotFoundError:
        return True


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs in this pid namespace."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or past any process id
        return False
    except PermissionError:
        return True
    return True
