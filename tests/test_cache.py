"""ResultCache: hits and misses, the LRU bound on local disk, several processes, S3."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from darkroom.cache import MemoryTier, ResultCache
from darkroom.config import S3
from darkroom.storage import LocalStorage, ObjectStorage

pytestmark = pytest.mark.anyio

MAX = 100_000
ENTRY = b"x" * 4_000


def disk_total(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def backdate(cache: ResultCache, key: str, age_s: float) -> None:
    assert isinstance(cache.storage, LocalStorage)
    t = time.time() - age_s
    os.utime(cache.storage.path_for(cache.prefix + key), (t, t))


def mtime_ns(cache: ResultCache, key: str) -> int:
    assert isinstance(cache.storage, LocalStorage)
    return cache.storage.path_for(cache.prefix + key).stat().st_mtime_ns


@pytest.fixture
def cache(tmp_path: Path) -> ResultCache:
    return ResultCache(LocalStorage(tmp_path), max_bytes=MAX)


async def test_miss_then_hit(cache: ResultCache) -> None:
    assert await cache.get("ab12cd/w300.webp") is None
    await cache.put("ab12cd/w300.webp", b"image")
    assert await cache.get("ab12cd/w300.webp") == b"image"
    await cache.put("ab12cd/w300.webp", b"image 2")
    assert await cache.get("ab12cd/w300.webp") == b"image 2"
    assert (cache.hits, cache.misses, cache.evictions) == (2, 1, 0)


async def test_large_entry(cache: ResultCache) -> None:
    data = os.urandom(3 * 1024 * 1024)
    unbounded = ResultCache(cache.storage)
    await unbounded.put("big", data)
    assert await unbounded.get("big") == data


async def test_hit_refreshes_mtime_at_most_once_a_minute(cache: ResultCache) -> None:
    await cache.put("k", ENTRY)
    fresh = mtime_ns(cache, "k")
    await cache.get("k")
    assert mtime_ns(cache, "k") == fresh
    backdate(cache, "k", 120)
    await cache.get("k")
    assert time.time() - mtime_ns(cache, "k") / 1e9 < 5


async def test_bound_holds(cache: ResultCache, tmp_path: Path) -> None:
    for i in range(100):
        await cache.put(f"k{i:03d}", ENTRY)
        assert disk_total(tmp_path) <= MAX
    assert cache.evictions > 0
    assert await cache.get("k099") == ENTRY


async def test_lru_keeps_recently_read_entries(cache: ResultCache, tmp_path: Path) -> None:
    for i in range(20):  # 80% of the bound: no eviction yet
        await cache.put(f"old{i:02d}", ENTRY)
        backdate(cache, f"old{i:02d}", 3600 - i)
    assert cache.evictions == 0
    for i in range(5):  # the five oldest are read, so become the most recently used
        assert await cache.get(f"old{i:02d}") == ENTRY
    for i in range(10):
        await cache.put(f"new{i:02d}", ENTRY)
    assert disk_total(tmp_path) <= MAX
    present = {info.key.removeprefix("cache/") async for info in cache.storage.list("cache/")}
    assert {f"old{i:02d}" for i in range(5)} <= present
    assert {f"new{i:02d}" for i in range(10)} <= present
    assert "old05" not in present
    assert cache.evictions == 30 - len(present)


async def test_delete_prefix(cache: ResultCache) -> None:
    for key in ["ab/1", "ab/2", "abc/1", "ac/1"]:
        await cache.put(key, b"1")
    assert await cache.delete_prefix("ab/") == 2
    assert await cache.get("ab/1") is None
    assert await cache.get("abc/1") == b"1"
    assert await cache.delete_prefix("a") == 2
    assert await cache.get("ac/1") is None


async def test_unbounded(tmp_path: Path) -> None:
    cache = ResultCache(LocalStorage(tmp_path), max_bytes=0)
    for i in range(50):
        await cache.put(f"k{i}", ENTRY)
    assert disk_total(tmp_path) == 50 * len(ENTRY)
    assert cache.evictions == 0


async def test_two_processes_share_the_bound(tmp_path: Path) -> None:
    a = ResultCache(LocalStorage(tmp_path), max_bytes=MAX)
    b = ResultCache(LocalStorage(tmp_path), max_bytes=MAX)
    for i in range(100):
        await (a if i % 3 else b).put(f"k{i:03d}", ENTRY)
        assert disk_total(tmp_path) <= MAX
    assert a.evictions > 0 and b.evictions > 0
    assert await b.get("k099") == ENTRY  # written by a, read by b
    assert b.hits == 1


async def test_object_storage_cache(s3_settings: S3) -> None:
    cache = ResultCache(ObjectStorage(s3_settings), max_bytes=MAX)
    assert await cache.get("ab/1") is None
    await cache.put("ab/1", b"1")
    assert await cache.get("ab/1") == b"1"
    assert await cache.delete_prefix("ab/") == 1
    assert await cache.get("ab/1") is None
    assert (cache.hits, cache.misses) == (1, 2)


def test_memory_tier_is_bounded_and_least_recently_used_goes_first():
    tier = MemoryTier(max_bytes=800)
    for name in "abcd":
        tier.put(name, name.encode() * 100)
    assert tier.get("a") is not None  # "a" is now the most recent
    for name in "efghi":  # one past the bound
        tier.put(name, name.encode() * 100)
    assert tier.size <= 800
    assert tier.get("a") == b"a" * 100
    assert tier.get("b") is None


def test_memory_tier_keeps_nothing_when_off_and_refuses_entries_over_an_eighth():
    assert MemoryTier(0).put("k", b"x") is None and MemoryTier(0).get("k") is None
    tier = MemoryTier(800)
    tier.put("big", b"x" * 101)
    assert tier.get("big") is None


@pytest.mark.anyio
async def test_memory_tier_serves_hits_and_forgets_a_deleted_prefix(tmp_path):
    cache = ResultCache(LocalStorage(tmp_path), memory_bytes=1 << 20)
    await cache.put("src1/abc", b"derivative")
    (tmp_path / "cache" / "src1" / "abc").unlink()  # the disk copy is gone...
    assert await cache.get("src1/abc") == b"derivative"  # ...the memory copy answers
    await cache.delete_prefix("src1/")
    assert await cache.get("src1/abc") is None
