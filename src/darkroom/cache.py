"""The result cache: rendered derivatives kept under `cache/` in a Storage.

On local disk the total size is bounded by `max_bytes` with an LRU that stays correct when
several processes share the directory, because all its state is in the files' mtimes:

- a hit refreshes the file's mtime when it is over a minute old, so a hit costs an
  open, an fstat and a read (and rarely a utime), never a directory scan;
- after a process has written ~5% of `max_bytes` since its last sweep, it lists the
  cache, and deletes the least recently used files until the total is under 90%.

With N processes the total stays under 90% + N x 5% of the bound. Object-store caches are
not bounded here (use a bucket lifecycle rule); `max_bytes=0` means unbounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import OrderedDict

from darkroom.errors import NotFound, StorageError
from darkroom.storage.base import Storage
from darkroom.storage.local import LocalStorage

TOUCH_AFTER_S = 60.0
SWEEP_EVERY = 0.05  # of max_bytes written by this process
SWEEP_TO = 0.90  # of max_bytes left after a sweep
_THREAD_READ_BYTES = 1024 * 1024


class ResultCache:
    """Opaque keys to bytes, with hit/miss/eviction counters for metrics."""

    def __init__(self, storage: Storage, max_bytes: int = 0, prefix: str = "cache/",
                 memory_bytes: int = 0) -> None:
        self.storage = storage
        self.memory = MemoryTier(memory_bytes)
        self.max_bytes = max_bytes
        self.prefix = prefix
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._local = storage if isinstance(storage, LocalStorage) else None
        self._bounded = max_bytes > 0 and self._local is not None
        self._unswept = 0
        self._sweeping = False

    async def get(self, key: str) -> bytes | None:
        """The cached bytes, or None on a miss."""
        data = self.memory.get(key)
        if data is not None:
            self.hits += 1
            return data
        if self._local is not None:
            data = await self._get_local(self._local, self.prefix + key)
        else:
            try:
                data = await self.storage.get(self.prefix + key)
            except NotFound:
                data = None
        if data is None:
            self.misses += 1
        else:
            self.hits += 1
            self.memory.put(key, data)
        return data

    async def put(self, key: str, data: bytes) -> None:
        """Store atomically; StorageError propagates. May trigger an eviction sweep."""
        await self.storage.put(self.prefix + key, data)
        self.memory.put(key, data)
        if not self._bounded:
            return
        self._unswept += len(data)
        if self._unswept >= self.max_bytes * SWEEP_EVERY and not self._sweeping:
            await self._sweep()

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every entry whose key starts with `prefix`; return how many."""
        self.memory.drop_prefix(prefix)
        keys = [info.key async for info in self.storage.list(self.prefix + prefix)]
        for key in keys:
            await self.storage.delete(key)
        return len(keys)

    async def _get_local(self, local: LocalStorage, key: str) -> bytes | None:
        path = local.path_for(key)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if time.time() - st.st_mtime > TOUCH_AFTER_S:
                    with contextlib.suppress(OSError):  # LRU is best effort; the hit is not
                        os.utime(f.fileno())
                if st.st_size > _THREAD_READ_BYTES:
                    return await asyncio.to_thread(f.read)
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as e:
            raise StorageError(f"cannot read cache entry {key!r}: {e.strerror or e}") from e

    async def _sweep(self) -> None:
        """Delete least recently used entries until the total is under SWEEP_TO."""
        self._sweeping = True
        self._unswept = 0
        try:
            entries = [info async for info in self.storage.list(self.prefix)]
            total = sum(info.size for info in entries)
            for info in sorted(entries, key=lambda info: info.modified):
                if total <= self.max_bytes * SWEEP_TO:
                    break
                await self.storage.delete(info.key)
                total -= info.size
                self.evictions += 1
        finally:
            self._sweeping = False


class MemoryTier:
    """A per-process LRU of hot entries in front of the disk, bounded in bytes.

    Always consistent: cache keys name their content (source version + recipe), so an
    entry never changes, it only stops being asked for.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[str, bytes] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        data = self._entries.get(key)
        if data is not None:
            self._entries.move_to_end(key)
        return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes // 8 or key in self._entries:
            return  # nothing held when max_bytes is 0; no single entry crowds out the rest
        self._entries[key] = data
        self.size += len(data)
        while self.size > self.max_bytes:
            self.size -= len(self._entries.popitem(last=False)[1])

    def drop_prefix(self, prefix: str) -> None:
        for key in [k for k in self._entries if k.startswith(prefix)]:
            self.size -= len(self._entries.pop(key))
