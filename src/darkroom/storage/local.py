"""Storage on a local directory: one file per key, written by temp file + fsync + rename."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import shutil
import stat
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from darkroom.errors import BadRequest, NotFound, StorageError
from darkroom.storage import temps
from darkroom.storage.base import TEMP_NAME, ObjectInfo, check_key, check_new_key

FOLDER_TRIES = 10  # writes that find their folder pruned under them, one after another
_THREAD_READ_BYTES = 1024 * 1024  # bigger files are read off the event loop
_COPY_CHUNK = 1024 * 1024
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL
T = TypeVar("T")


def check_prefix(prefix: str) -> str:
    """The directory part of a list prefix, checked like a key; the rest is a plain filter."""
    folder = prefix.rpartition("/")[0]
    if folder or prefix.startswith("/"):
        check_key(folder)
    return folder


class LocalStorage:
    """Objects as files under `root`; no key resolves outside it, even through symlinks."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._root = str(self.root)
        self._safe_dirs: set[str] = set()  # existing directories already resolved inside root
        self.blocking = LocalFiles(self)

    def path_for(self, key: str) -> Path:
        """The file holding `key`; raises BadRequest(bad_key) if it would leave the root."""
        path = self._located(key)
        if os.path.islink(path):
            self._check_inside(path, key)
        return Path(path)

    def _located(self, key: str) -> str:
        """The path of `key`, its directory checked to resolve inside the root.

        Resolving every component costs a syscall each, so a directory found to resolve
        inside the root is remembered; the last component is the caller's to check.
        """
        path, parent = _joined(self._root, key)
        if parent not in self._safe_dirs:
            self._check_inside(parent, key)
            if os.path.isdir(parent) and len(self._safe_dirs) < 4096:
                self._safe_dirs.add(parent)
        return path

    def _check_inside(self, path: str, key: str) -> None:
        real = os.path.realpath(path)
        is_root = real == self._root and path == self._root  # a top-level key's directory
        if not (is_root or real.startswith(self._root + os.sep)):
            raise BadRequest(f"bad key {key!r}: resolves outside the storage root", "bad_key")

    async def get(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size > _THREAD_READ_BYTES:
                    return await asyncio.to_thread(f.read)
                return f.read()
        except OSError as e:
            raise _translate(e, key) from e

    async def head(self, key: str) -> ObjectInfo:
        path = self._located(key)  # one lstat answers both "is it a link" and "what is it"
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                self._check_inside(path, key)
                st = os.stat(path)
        except OSError as e:
            raise _translate(e, key) from e
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(f"no object {key!r}", "not_found")
        return _info(key, st)

    async def put(self, key: str, data: bytes, content_type: str | None = None,
                  sweep: bool = False) -> ObjectInfo:
        return await asyncio.to_thread(self.blocking.put, key, data, content_type, sweep)

    async def put_file(self, key: str, source: Path, content_type: str | None = None,
                       move: bool = False) -> ObjectInfo:
        return await asyncio.to_thread(self.blocking.put_file, key, source, content_type, move)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.blocking.delete, key)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        folder = check_prefix(prefix)
        start = self.path_for(folder) if folder else self.root
        try:
            found = await asyncio.to_thread(self._scan, start, prefix)
        except OSError as e:
            raise StorageError(f"cannot list {prefix!r}: {e.strerror or e}") from e
        for info in found:
            yield info

    async def sweep(self, folder: str) -> None:
        start = self.path_for(folder)  # checked like a key
        try:
            await asyncio.to_thread(self._sweep_tree, start)
        except OSError as e:
            raise StorageError(f"cannot sweep {folder!r}: {e.strerror or e}") from e

    def _sweep_tree(self, start: Path) -> None:
        """Under `start` (not through links), deepest first: temp files left behind go,
        then folders that hold nothing else (`prune`)."""
        if start.is_symlink() or not start.is_dir():
            return
        for folder, _subfolders, names in os.walk(start, topdown=False):
            here = Path(folder)
            for name in names:
                if temps.left_over(here, name):
                    (here / name).unlink(missing_ok=True)
            with contextlib.suppress(FileNotFoundError):  # pruned with a child already
                self.prune(here)

    async def abort_stale_uploads(self, before: datetime,
                                  going_on: Callable[[], bool] = lambda: True) -> int:
        return 0  # no parts kept apart: see `Storage.abort_stale_uploads`

    async def ping(self) -> None:
        if not (self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK)):
            raise StorageError(f"storage root {self.root} is not a writable directory")

    def prune(self, folder: Path) -> None:
        """Remove `folder` and then its parents, up to the root, while each holds nothing
        but temp files their writers left behind (`temps.left_over`): as on S3, a folder
        lasts while it holds objects, and a write makes it again. A write racing in stops
        it (the folder is not empty); raises OSError."""
        while str(folder).startswith(self._root + os.sep):
            names = os.listdir(folder)
            if not all(temps.left_over(folder, name) for name in names):
                return
            for name in names:
                (folder / name).unlink(missing_ok=True)
            folder.rmdir()
            self._safe_dirs.discard(str(folder))
            folder = folder.parent

    def _scan(self, start: Path, prefix: str) -> list[ObjectInfo]:
        """Regular files (no symlinks, no temp files) under `start` whose key has `prefix`."""
        found: list[ObjectInfo] = []
        pending = [start]
        while pending:
            try:
                entries = list(os.scandir(pending.pop()))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                key = Path(entry.path).relative_to(self.root).as_posix()
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False) and not TEMP_NAME.match(entry.name):
                    if key.startswith(prefix):
                        try:
                            found.append(_info(key, entry.stat(follow_symlinks=False)))
                        except FileNotFoundError:  # deleted while scanning
                            pass
        return found


class LocalFiles:
    """`LocalStorage.blocking`: its writes and reads done in the calling thread."""

    def __init__(self, storage: LocalStorage) -> None:
        self._storage = storage

    def get(self, key: str) -> bytes:
        try:
            return self._storage.path_for(key).read_bytes()
        except OSError as e:
            raise _translate(e, key) from e

    def get_if_match(self, key: str, etag: str) -> bytes | None:
        # files are replaced, never changed in place: the etag of the file opened (its
        # inode's) is that of the bytes read from it
        try:
            with open(self._storage.path_for(key), "rb") as f:
                if _info(key, os.fstat(f.fileno())).etag != etag:
                    return None
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as e:
            raise _translate(e, key) from e

    def put(self, key: str, data: bytes, content_type: str | None = None,
            sweep: bool = False) -> ObjectInfo:
        return self._write(key, _write_atomic, data, sweep)

    def put_file(self, key: str, source: Path, content_type: str | None = None,
                 move: bool = False) -> ObjectInfo:
        return self._write(key, _move_atomic if move else _write_atomic, Path(source))

    def head(self, key: str) -> ObjectInfo:
        path = self._storage.path_for(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no object {key!r}", "not_found") from None
        except OSError as e:
            raise StorageError(f"cannot check {key!r}: {e.strerror or e}") from e
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(f"no object {key!r}", "not_found")
        return _info(key, st)

    def delete(self, key: str) -> None:
        """Delete `key`, and the temp files of it that writers now gone left (a worker
        killed while writing it: nobody may write the key again to sweep them); then its
        folders that hold nothing else (`LocalStorage.prune`)."""
        path = self._storage.path_for(key)
        try:
            path.unlink(missing_ok=True)
        except (NotADirectoryError, IsADirectoryError):
            return  # no object there
        except OSError as e:
            raise StorageError(f"cannot delete {key!r}: {e.strerror or e}") from e
        with contextlib.suppress(OSError):  # the object is gone: the rest, if it can
            temps.sweep(path)
            self._storage.prune(path.parent)

    def _write(self, key: str, write, *args) -> ObjectInfo:
        # a link at `key` itself is replaced, never followed: only its directory is checked
        path = Path(self._storage._located(check_new_key(key)))
        try:
            return _info(key, write(path, *args))
        except OSError as e:
            raise StorageError(f"cannot write {key!r}: {e.strerror or e}") from e


def _write_atomic(path: Path, data: bytes | Path, sweep: bool = False) -> os.stat_result:
    """Write `data` (bytes, or a file's content) to a unique temp file beside `path`,
    fsync it, rename it over `path`; first, if `sweep`, remove the temp files of `path`
    that writers left behind (`temps.sweep`)."""
    if sweep:
        temps.sweep(path)
    tmp = temps.temp_for(path)
    fd = _in_folder(path, lambda: os.open(tmp, _NEW_FILE, 0o666))
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, Path):
                with open(data, "rb") as source:
                    shutil.copyfileobj(source, f, _COPY_CHUNK)
            else:
                f.write(data)
            f.flush()
            # A fine-grained mtime keeps the etag changing even for same-size rewrites.
            now = time.time_ns()
            os.utime(f.fileno(), ns=(now, now))
            os.fsync(f.fileno())
            st = os.fstat(f.fileno())
        os.replace(tmp, path)
        return st
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _in_folder(path: Path, create: Callable[[], T]) -> T:
    """`create()` a file in `path`'s folder, making the folder first when it says the
    folder is missing (the first object in it, or a delete pruned it, or a parent of it,
    meanwhile): no `mkdir` a write otherwise."""
    for _ in range(FOLDER_TRIES):
        try:
            return create()
        except FileNotFoundError:
            with contextlib.suppress(FileNotFoundError):  # a parent pruned mid-way: again
                os.makedirs(path.parent, exist_ok=True)
    return create()


def _move_atomic(path: Path, source: Path) -> os.stat_result:
    """fsync the file `source` and rename it over `path`; copied as `_write_atomic` does
    when it lies on another filesystem."""
    fd = os.open(source, os.O_RDONLY)
    try:
        now = time.time_ns()  # as a fresh write's: the etag changes with every version
        os.utime(fd, ns=(now, now))
        os.fsync(fd)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    try:
        _in_folder(path, lambda: os.replace(source, path))
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        return _write_atomic(path, source)
    return st


@functools.lru_cache(maxsize=4096)
def _joined(root: str, key: str) -> tuple[str, str]:
    """The path of a checked `key` under `root`, and its directory (a cache hit's key comes
    again and again)."""
    path = os.path.join(root, check_key(key))
    return path, os.path.dirname(path)


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    etag = f"{st.st_mtime_ns:x}-{st.st_size:x}-{st.st_ino:x}"
    return ObjectInfo(key=key, size=st.st_size, etag=etag, modified=st.st_mtime)


def _translate(e: OSError, key: str) -> Exception:
    if isinstance(e, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return NotFound(f"no object {key!r}", "not_found")
    return StorageError(f"cannot read {key!r}: {e.strerror or e}")
