"""From a plan to bytes: source version, result cache, engine in the pool."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from darkroom.cache import ResultCache
from darkroom.config import Limits
from darkroom.engine import Rendered, render
from darkroom.engine.formats import sniff
from darkroom.engine.limits import check_source_bytes
from darkroom.errors import NotFound, StorageError
from darkroom.plan import EditPlan, Watermark
from darkroom.server.observability import CACHE, ENGINE, labelled, log
from darkroom.server.pool import GRACE_S, RenderPool
from darkroom.storage import Storage


@dataclass(frozen=True)
class Result:
    """A derivative ready to send."""

    data: bytes
    format: str
    etag: str
    cached: bool


class Renderer:
    """Renders stored sources through the result cache, and uploaded bytes without it."""

    def __init__(self, storage: Storage, cache: ResultCache | None, pool: RenderPool,
                 limits: Limits) -> None:
        self.storage = storage
        self.cache = cache
        self.pool = pool
        self.limits = limits

    async def etag(self, plan: EditPlan, accept: frozenset[str]) -> tuple[str, str]:
        """The derivative's cache key and ETag, from the versions of the source and of its
        watermarks: no pixels read."""
        key = plan.source.key
        try:
            info = await self.storage.head(key)
        except NotFound:
            raise NotFound(f"source {key!r} not found", "source_not_found") from None
        check_source_bytes(info.size, self.limits)
        versions = [info.etag]  # a replaced watermark changes the result as much as a source
        for mark in sorted({op.key for op in plan.ops if isinstance(op, Watermark)}):
            try:
                versions.append((await self.storage.head(mark)).etag)
            except NotFound:
                raise NotFound(f"{mark!r} not found", "watermark_not_found") from None
        negotiated = ",".join(sorted(accept)) if plan.output.format == "auto" else ""
        digest = hashlib.sha256(
            f"{'/'.join(versions)}\0{plan.recipe_hash}\0{negotiated}".encode()).hexdigest()[:32]
        return f"{cache_folder(key)}/{digest}", f'"{digest}"'

    async def stored(self, plan: EditPlan, accept: frozenset[str],
                     cache_key: str, etag: str) -> Result:
        """Serve from the cache, or render the stored source and cache the result."""
        if self.cache is not None:
            data = await self.cache.get(cache_key)
            if data is not None:
                labelled(CACHE, "hit").inc()
                return Result(data, sniff(data), etag, True)
            labelled(CACHE, "miss").inc()
        source = await self.read(plan.source.key, "source_not_found")
        rendered = await self.run(plan, source, accept)
        if self.cache is not None:
            try:
                await self.cache.put(cache_key, rendered.data)
            except StorageError as error:
                log.warning("cache_write_failed", key=cache_key, error=error.message)
        return Result(rendered.data, rendered.format, etag, False)

    async def run(self, plan: EditPlan, data: bytes, accept: frozenset[str]) -> Rendered:
        """Render `data` in the pool, with the plan's watermarks read from storage."""
        assets = {}
        for op in plan.ops:
            if isinstance(op, Watermark) and op.key not in assets:
                assets[op.key] = await self.read(op.key, "watermark_not_found")
        return await self.pool.run(_timed_render, plan, data, self.limits, accept, assets,
                                   timeout=self.limits.time_budget_s + GRACE_S)

    async def read(self, key: str, missing_code: str) -> bytes:
        """The stored object's bytes, refused from its size alone when over the limit."""
        try:
            info = await self.storage.head(key)
            check_source_bytes(info.size, self.limits)
            return await self.storage.get(key)
        except NotFound:
            raise NotFound(f"{key!r} not found", missing_code) from None


def cache_folder(key: str) -> str:
    """The result cache's folder for every derivative of the source `key`."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _timed_render(plan: EditPlan, data: bytes, limits: Limits, accept: frozenset[str],
                  assets: dict[str, bytes]) -> Rendered:
    start = time.perf_counter()
    rendered = render(plan, data, limits, accept, assets)
    labelled(ENGINE, rendered.format).observe(time.perf_counter() - start)
    return rendered
