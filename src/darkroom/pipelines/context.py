"""What a step works with: the image version of its job, earlier outputs, the runtime.

`Runtime` is one per worker process: the storage (steps call its `blocking` side from
their threads), the catalog engine, the limits, a thread pool for renders and an event loop
thread for the async work steps start (webhooks, the outbox's dispatch).

Pre-renders: an upload in the worker's own process may start its jobs' renditions on the
render threads at once, when one is free, rather than wait for the queue's next poll. They
are rendered in memory only; the step that needs one takes it (`prerendered`) and stores
it itself, so every rendition is still written by its job's attempt, once. The upload
also hands over the rendition it stored itself (its head start), so that the step takes
its facts rather than read it back. One that no step takes (its job ran in another
process, or was cancelled) is dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import structlog
from sqlalchemy import Connection, Engine

from darkroom.config import Settings
from darkroom.engine.load import Header
from darkroom.errors import Conflict
from darkroom.server.observability import PRERENDERS
from darkroom.storage import Storage, open_storage

if TYPE_CHECKING:
    from darkroom.engine import Rendered

T = TypeVar("T")
log = structlog.get_logger("darkroom.pipelines")
PRERENDER_TTL_S = 60.0  # a pre-render no step took by then is dropped
PRERENDERS_PER_THREAD = 16  # renditions held in memory for steps, per render thread
_clock = time.monotonic


class Runtime:
    """A worker's shared resources; `close()` stops its loop and threads."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.limits = settings.limits
        self.storage: Storage = open_storage(settings)
        self.render_threads = settings.pipelines.render_threads or 2 * settings.threads
        self.renders = ThreadPoolExecutor(self.render_threads, thread_name_prefix="render")
        # sources that renditions steps hold in memory at once: enough to keep the render
        # threads fed, however many runs wait (each up to `limits.max_source_bytes`)
        self.sources = threading.BoundedSemaphore(2 * self.render_threads)
        self._lock = threading.RLock()  # a task done at once calls back under it
        self._pending = 0  # render tasks queued or running
        # key -> (since, its task, stored already)
        self._prerenders: dict[str, tuple[float, Future, bool]] = {}
        self._expiring = False  # a timer will drop the stale ones (`_expire_now`)
        # Two per run: its attempt, and one that ran past its timeout and is finishing.
        self.steps = ThreadPoolExecutor(2 * settings.pipelines.concurrency,
                                        thread_name_prefix="step")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="pipeline-io")
        self._thread.start()

    def call(self, coroutine: Awaitable[T]) -> T:
        """Run a coroutine to its end on the runtime's loop, from any thread."""
        return self.start(coroutine).result()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write `key` from this thread, first removing what a writer killed mid-write
        left behind."""
        self.storage.blocking.put(key, data, content_type, sweep=True)

    def render(self, work: Callable[..., T], *args: object) -> Future:
        """`work(*args)` on a render thread."""
        with self._lock:
            return self._submit(work, *args)

    def prerender(self, works: dict[str, Callable[[], Rendered]],
                  stored: dict[str, Rendered] | None = None) -> int:
        """Start as many of `works` (key -> a work rendering it in memory) as render
        threads are free; how many started. `stored` are the renditions an upload stored
        itself (its head start), handed over so that their step need not read them back.
        The step that needs a key takes it with `prerendered`."""
        now = _clock()
        with self._lock:
            self._expire(now)
            cap = PRERENDERS_PER_THREAD * self.render_threads
            room = min(self.render_threads - self._pending, cap - len(self._prerenders))
            started = list(works.items())[:max(0, room)]
            for key, work in started:
                self._prerenders[key] = (now, self._submit(work), False)
            for key, rendered in list((stored or {}).items())[:cap - len(self._prerenders)]:
                self._prerenders[key] = (now, _kept(rendered), True)
            arm = bool(self._prerenders) and not self._expiring
            self._expiring |= arm
        PRERENDERS.labels("started").inc(len(started))
        if arm:  # dropped in time even if nothing else comes (one timer at a time)
            self._loop.call_soon_threadsafe(self._loop.call_later, PRERENDER_TTL_S + 1,
                                            self._expire_now)
        return len(started)

    def prerendered(self, key: str) -> tuple[Future, bool] | None:
        """The pre-render task of `key` and whether it is stored already, taken (no one
        else gets it); None if there is none."""
        with self._lock:
            entry = self._prerenders.pop(key, None)
        if entry is None:
            return None
        if not entry[2]:
            PRERENDERS.labels("taken").inc()
        return entry[1], entry[2]

    def _expire_now(self) -> None:
        """The timer: drop what is stale, and come back when the oldest left will be
        (armed again even if dropping failed, not sooner than in a second)."""
        now = _clock()
        try:
            with self._lock:
                self._expire(now)
        finally:
            with self._lock:
                oldest = min((since for since, _, _ in self._prerenders.values()),
                             default=None)
                self._expiring = oldest is not None
            if oldest is not None:
                self._loop.call_later(max(1.0, oldest + PRERENDER_TTL_S + 1 - now),
                                      self._expire_now)

    def _expire(self, now: float) -> None:
        """Drop the pre-renders no step took in time (their jobs ran elsewhere, or not)."""
        stale = [k for k, (since, _, _) in self._prerenders.items()
                 if now - since > PRERENDER_TTL_S]
        dropped = sum(not self._prerenders.pop(key)[2] for key in stale)
        PRERENDERS.labels("dropped").inc(dropped)

    def _submit(self, work: Callable[..., T], *args: object) -> Future:
        """Submit `work`, counted until it ends (the caller holds the lock)."""
        task = self.renders.submit(work, *args)
        self._pending += 1
        task.add_done_callback(self._done)
        return task

    def _done(self, _task: Future) -> None:
        with self._lock:
            self._pending -= 1

    def start(self, coroutine: Awaitable[T]) -> Future:
        """Run a coroutine on the runtime's loop; its future."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def close(self) -> None:
        """Let the steps under way end, then stop the renders and the loop."""
        self.steps.shutdown(wait=True)
        self.renders.shutdown(wait=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()


@dataclass(frozen=True)
class Source:
    """The image version a job works on: its bytes are read only while storage holds them
    still (`stored_version`: by `etag`, the one its upload's write answered, or else by
    their checksum `sha256`). With `alpha` known (None: catalogued before it was recorded,
    or a job queued before), its format, pages and alpha name its renditions without a
    read (`steps.rendition_format`); with its orientation and ICC too, it is the header
    that renders it (`header`)."""

    image_id: str
    key: str
    version: int
    version_id: int
    sha256: str
    format: str
    width: int
    height: int
    bytes: int
    storage_key: str
    pages: int = 1
    alpha: bool | None = None
    orientation: int | None = None
    icc: bool | None = None
    etag: str | None = None

    @classmethod
    def load(cls, data: dict) -> Source:
        """The source a job's start holds, without the fields it does not know (a start
        written by a newer darkroom, during an upgrade)."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @classmethod
    def of(cls, image, version) -> Source:
        """The source of a job over `version` (an ImageVersion) of `image` (an Image)."""
        return cls(image_id=image.id, key=image.key, version=version.number,
                   version_id=version.id, sha256=version.sha256, format=version.format,
                   width=version.width, height=version.height, bytes=version.bytes,
                   storage_key=version.storage_key, pages=version.pages,
                   alpha=version.alpha, orientation=version.orientation, icc=version.icc,
                   etag=version.etag or None)

    def header(self) -> Header | None:
        """The header of these bytes as the catalog recorded it (the same bytes: they are
        checked when read, see `stored_version`); None if it did not record all of it."""
        if self.alpha is None or self.orientation is None or self.icc is None:
            return None
        return Header(self.format, self.width, self.height, self.pages, self.alpha,
                      self.orientation, self.icc, self.bytes)


class Ending:
    """The catalogue writes a step leaves to the transaction that ends its attempt (one
    transaction less a step), each with what takes the step's effects back should the
    attempt not stand succeeded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[Callable[[Connection], bool], Callable[[], None]]] = []
        self._closed = False

    def add(self, write: Callable[[Connection], bool], undo: Callable[[], None]) -> None:
        with self._lock:
            if not self._closed:
                self._items.append((write, undo))
                return
        take_back([(write, undo)])  # the attempt ended without it (past its timeout)

    def close(self) -> list[tuple[Callable[[Connection], bool], Callable[[], None]]]:
        """What was left, for the attempt's end; later additions are taken back at once."""
        with self._lock:
            self._closed = True
            return list(self._items)


def take_back(items: list[tuple[Callable[[Connection], bool], Callable[[], None]]]
              ) -> None:
    """Undo the effects of an attempt that does not stand succeeded (best effort: its
    outcome is recorded, or it is past its timeout)."""
    for _write, undo in items:
        try:
            undo()
        except Exception:  # noqa: BLE001
            log.exception("step_not_taken_back")


@dataclass(frozen=True)
class StepContext:
    runtime: Runtime
    job_id: str
    run: int
    pipeline: str
    step: str
    source: Source
    outputs: dict[str, dict] = field(default_factory=dict)
    error: dict | None = None  # the failure a catcher sent this step
    ending: Ending = field(default_factory=Ending, repr=False, compare=False)

    def at_end(self, write: Callable[[Connection], bool], undo: Callable[[], None]) -> None:
        """Leave `write` to the transaction that ends this attempt, should the step
        succeed; it answers False when the job may no longer write, and the attempt then
        fails with `image_gone`. `undo` takes the step's effects back when the attempt
        does not stand succeeded: after that transaction, or at once if the attempt
        already ended (past its timeout)."""
        self.ending.add(write, undo)

    def read_source(self) -> bytes:
        """The version's bytes; Conflict(source_changed) once a newer version replaced them
        (that version's own jobs do its work)."""
        data = stored_version(self.runtime.storage, self.source.storage_key,
                              self.source.etag, self.source.sha256)
        if data is None:
            raise Conflict(f"image {self.source.image_id} version {self.source.version} was "
                           "replaced while its job ran", "source_changed")
        return data


def stored_version(storage: Storage, key: str, etag: str | None, sha256: str
                   ) -> bytes | None:
    """The bytes stored at `key` if they are still the version with checksum `sha256`;
    None once a newer version replaced them. When the object is still the one written
    with `etag`, that is checked in the read, without hashing; otherwise (no etag known,
    or the same bytes written again: a failed replace puts the old ones back, a restore
    copies them) the bytes are hashed."""
    if etag and (data := storage.blocking.get_if_match(key, etag)) is not None:
        return data
    data = storage.blocking.get(key)
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def _kept(value: T) -> Future:
    """A future that holds `value` already."""
    future: Future = Future()
    future.set_result(value)
    return future
