"""The time budget of one render, enforced inside libvips through progress signals."""

from __future__ import annotations

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
        """Arm `image` so that computing it stops at the deadline; returns it.

        Images made from `image` signal on it too, and pyvips frees the callback with the
        Python object: the budget keeps it alive, else a later step crashes the process.
        """
        image.set_progress(True)
        image.signal_connect("eval", self._on_eval)
        self._watched.append(image)
        return image

    def release(self) -> None:
        """Forget the armed images once the render is over: they refer back to this
        budget through their callback, and the cycle would hold their pixel buffers
        until Python's cyclic collector happened to run."""
        self._watched.clear()

    def _on_eval(self, image: pyvips.Image, _progress: object) -> None:
        if time.monotonic() > self.deadline:
            self.killed = True
            image.set_kill(True)

    def error(self) -> Unprocessable:
        return Unprocessable(
            f"rendering took longer than the {self.seconds:g} s budget", "time_budget_exceeded"
        )
