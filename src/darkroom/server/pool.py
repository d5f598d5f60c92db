"""The bounded CPU pool: a few engine threads and a short queue, then 503."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from darkroom.errors import Overloaded
from darkroom.server.observability import QUEUE

T = TypeVar("T")


class RenderPool:
    """Runs CPU work in `threads` threads; beyond `threads + queue` waiting, refuses."""

    def __init__(self, threads: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="engine")
        self.capacity = threads + queue
        self.depth = 0

    async def run(self, work: Callable[..., T], *args: object) -> T:
        """Run `work(*args)` in the pool, or raise Overloaded when the pool is full."""
        if self.depth >= self.capacity:
            raise Overloaded("render queue is full, retry shortly", retry_after=1)
        self.depth += 1
        QUEUE.inc()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        finally:
            self.depth -= 1
            QUEUE.dec()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
