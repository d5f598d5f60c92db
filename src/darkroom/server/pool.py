"""The bounded CPU pool: a few engine threads and a short queue, then 503.

libvips stops a render at its deadline from inside (progress signals), but a decoder
stuck before it produces its first tile sends no signal. So the pool also stops
*waiting* at the deadline: the client gets its 422 on time, and the slot stays counted
as busy until the thread really ends, so such renders cannot pile up unseen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from darkroom.errors import Overloaded, Unprocessable
from darkroom.server.observability import QUEUE

T = TypeVar("T")
GRACE_S = 2.0  # beyond the render's own budget, for libvips to notice its kill flag


class RenderPool:
    """Runs CPU work in `threads` threads; beyond `threads + queue` in flight, refuses."""

    def __init__(self, threads: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="engine")
        self.capacity = threads + queue
        self.depth = 0

    async def run(self, work: Callable[..., T], *args: object, timeout: float | None = None) -> T:
        """`work(*args)` in the pool; Overloaded when full, Unprocessable past `timeout`."""
        if self.depth >= self.capacity:
            raise Overloaded("render queue is full, retry shortly", retry_after=1)
        self.depth += 1
        QUEUE.inc()
        future = asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise Unprocessable(f"rendering did not finish within {timeout:g} s",
                                "time_budget_exceeded") from None

    def _release(self, _future: asyncio.Future) -> None:
        self.depth -= 1
        QUEUE.dec()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
