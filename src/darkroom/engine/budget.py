"""The time budget of one render, enforced inside libvips by a watchdog thread."""

from __future__ import annotations

import threading
import time

import pyvips

from darkroom.errors import Unprocessable


class Budget:
    """A deadline; `watch(image)` makes libvips abort the image's evaluation after it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.killed = False
        self._watched: list[pyvips.Image] = []

    def check(self) -> None:
        """Raise when the deadline has passed (called between steps)."""
        if self.killed or time.monotonic() > self.deadline:
            raise self.error()

    def watch(self, image: pyvips.Image) -> pyvips.Image:
        """Arm `image`: at the deadline it is marked killed, and libvips stops computing
        it, or any image made from it, at the next region it prepares. Returns it.

        libvips's progress signals would do the same, but they call into Python for
        every tile, from libvips's own threads, each time waiting for the GIL."""
        with _WATCHDOG.lock:
            if self.killed:
                image.set_kill(True)
            self._watched.append(image)
        if len(self._watched) == 1:
            _WATCHDOG.arm(self)
        return image

    def release(self) -> None:
        """The render is over: disarm, and drop the images (their pixel buffers go)."""
        _WATCHDOG.disarm(self)
        self._watched.clear()

    def expire(self) -> None:
        """Kill every watched image (the watchdog calls this, holding its lock)."""
        self.killed = True
        for image in self._watched:
            image.set_kill(True)

    def error(self) -> Unprocessable:
        return Unprocessable(
            f"rendering took longer than the {self.seconds:g} s budget", "time_budget_exceeded"
        )


class _Watchdog:
    """One thread per process that expires the armed budgets whose deadline has passed;
    asleep while none is armed. Started on first use, and again if it ever ended."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._wake = threading.Condition(self.lock)
        self._armed: set[Budget] = set()
        self._next = float("inf")  # the deadline the thread sleeps towards
        self._thread: threading.Thread | None = None

    def arm(self, budget: Budget) -> None:
        with self.lock:
            self._armed.add(budget)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="render-budget")
                self._thread.start()
            elif budget.deadline < self._next:
                self._wake.notify()

    def disarm(self, budget: Budget) -> None:
        with self.lock:
            self._armed.discard(budget)

    def _run(self) -> None:
        with self.lock:
            while True:
                now = time.monotonic()
                for budget in [b for b in self._armed if b.deadline <= now]:
                    self._armed.discard(budget)
                    budget.expire()
                self._next = min((b.deadline for b in self._armed), default=float("inf"))
                self._wake.wait(None if self._next == float("inf") else self._next - now)


_WATCHDOG = _Watchdog()
