"""An upload's renditions started at once: what its jobs' first steps will make, rendered in
memory on the worker's free render threads, for those steps to store (see
`Runtime.prerender`). Without it, an upload's renditions wait for the queue's next poll
(0.25 s on average) while the render threads may sit idle."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

from darkroom.config import Limits
from darkroom.engine import Header, Rendered, render
from darkroom.errors import Conflict
from darkroom.pipelines.definition import Pipeline
from darkroom.pipelines.context import stored_version
from darkroom.pipelines.steps import first_renditions, rendition_format, rendition_key
from darkroom.plan.model import EditPlan
from darkroom.storage import Storage


def upcoming(pipelines: list[Pipeline], image_id: str, sha256: str, header: Header,
             made: EditPlan | None) -> dict[str, EditPlan]:
    """The renditions (key -> plan) that the first steps of `pipelines` will make of a new
    version, but the one the upload made itself (`made`, its head start)."""
    plans = {}
    for pipeline in pipelines:
        for plan in first_renditions(pipeline):
            if made is not None and plan.recipe_hash == made.recipe_hash:
                continue
            plans[rendition_key(image_id, sha256, plan, rendition_format(plan, header))] = plan
    return plans


def works(storage: Storage, source_key: str, written: tuple[str | None, str], header: Header,
          limits: Limits, plans: dict[str, EditPlan]) -> dict[str, Callable[[], Rendered]]:
    """For each of `plans` (key -> plan), the work that renders it from the stored source,
    read once for all of them (Conflict if it is no longer the version `written`, its etag
    and checksum: see `stored_version`)."""
    source = _Source(storage, source_key, written)
    return {key: functools.partial(_render, source, plan, header, limits)
            for key, plan in plans.items()}


def _render(source: _Source, plan: EditPlan, header: Header, limits: Limits) -> Rendered:
    return render(plan, source.data(), limits, header=header)


class _Source:
    """A stored source's bytes, read by the first pre-render that needs them."""

    def __init__(self, storage: Storage, key: str, written: tuple[str | None, str]) -> None:
        self.storage, self.key, self.written = storage, key, written
        self._lock = threading.Lock()
        self._data: bytes | None = None

    def data(self) -> bytes:
        with self._lock:
            if self._data is None:
                self._data = stored_version(self.storage, self.key, *self.written) or b""
        if not self._data:
            raise Conflict(f"{self.key} was replaced since its upload", "source_changed")
        return self._data
