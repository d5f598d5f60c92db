"""Answers that wait for jobs to end, so that a client need not poll: `?wait=<seconds>`
or `Prefer: wait=<seconds>` (RFC 7240) on `GET /v1/jobs/{id}`, `GET /v1/images/{id}`,
`POST /v1/images` and `PUT /v1/images/{id}`.

The answer comes once every job it names has ended (succeeded, failed or been cancelled),
or once the wait is over, whichever is first; it is read afresh then, so the client sees
the renditions made meanwhile and, by the jobs' statuses, whether they ended. One poller
per process serves every waiting request: a single query a tick for the jobs they all
wait on, whichever process runs those jobs. A wait ends early when its client hangs up
or the server stops; past `MAX_WAITERS` waiting requests, more are answered at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from darkroom.catalog.models import Job
from darkroom.errors import DarkroomError
from darkroom.pipelines.admin import ENDED

log = structlog.get_logger("darkroom.server")

MAX_WAIT_S = 50.0  # under the 60 s most proxies and load balancers allow an answer
TICK_S = 0.1  # how often the jobs waited on are read again
CHUNK = 500  # job ids a query reads at most
MAX_WAITERS = 1000  # requests waiting at once in a process
MAX_PREFER = 4096  # characters of `Prefer` fields read; longer ones are ignored
PREFER_DOC = {"parameters": [{
    "name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"},
    "description": "`wait=<seconds>` (RFC 7240), as `?wait=`; over the most it is cut to "
                   "it, and answered `Preference-Applied` when the answer waited"}]}
APPLIED_DOC = {"Preference-Applied": {"schema": {"type": "string"}, "description": (
    "`wait=<seconds>` when a `Prefer: wait` was applied")}}
APPLIED = {"headers": APPLIED_DOC}  # a response's OpenAPI entry, for `responses=`
WaitQuery = Annotated[float | None, Query(ge=0, le=MAX_WAIT_S, description=(
    "seconds to wait for the jobs to end before answering (or `Prefer: wait=<s>`)"))]
_SECONDS = re.compile(r"\d{1,6}(?:\.\d{1,3})?")
_watches: weakref.WeakSet[JobWatch] = weakref.WeakSet()


@dataclass(frozen=True)
class Wait:
    """How long `request` asked to wait, and whether it asked by `Prefer`."""

    request: Request | None = None
    seconds: float = 0.0
    preferred: bool = False


def asked(query: float | None, request: Request) -> Wait:
    """The wait `request` asks for: `?wait=` (`query`, validated by its route), else the
    first `wait` preference of its `Prefer` fields, cut to `MAX_WAIT_S`; one whose value
    is not a number of seconds is ignored, as RFC 7240 has it."""
    if query is not None:
        return Wait(request, query)
    fields = request.headers.getlist("prefer")
    if sum(map(len, fields)) > MAX_PREFER or not any("wait" in f.lower() for f in fields):
        return Wait(request)  # nothing to read, or too much to read on the event loop
    for name, value in _preferences(fields):
        if name == "wait":
            value = value.strip('"')
            if not _SECONDS.fullmatch(value):
                return Wait(request)
            return Wait(request, min(float(value), MAX_WAIT_S), True)
    return Wait(request)


def _preferences(fields: list[str]) -> Iterator[tuple[str, str]]:
    """Each preference's name (lower case) and value, its parameters left out."""
    for preference in _split(",".join(fields), ","):
        name, _, value = _split(preference, ";")[0].partition("=")
        yield name.strip().lower(), value.strip()


def _split(text: str, separator: str) -> list[str]:
    """`text` split at `separator` outside double-quoted strings."""
    parts, start, quoted, escaped = [], 0, False, False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def ended(session: Session, job_ids: list[str]) -> set[str]:
    """Which of `job_ids` have ended (an id no job has counts as ended: it was deleted)."""
    found: dict[str, str] = {}
    for start in range(0, len(job_ids), CHUNK):
        found.update(session.execute(
            select(Job.id, Job.status).where(Job.id.in_(job_ids[start:start + CHUNK]))).all())
    return {job_id for job_id in job_ids if found.get(job_id, ENDED[0]) in ENDED}


def release_all() -> None:
    """End every wait served by the running event loop now (its server is stopping): each
    request answers at once what stands, and later ones do not wait."""
    loop = asyncio.get_running_loop()
    for watch in list(_watches):
        if watch.loop is loop:
            watch.release()


class JobWatch:
    """Waits for jobs to end, for every request of this process, with one poller."""

    def __init__(self, read_ended: Callable[[list[str]], Awaitable[set[str]]]) -> None:
        self._read_ended = read_ended
        self._waiting: dict[asyncio.Future, set[str]] = {}
        self._poller: asyncio.Task | None = None
        self._released = False
        self.loop: asyncio.AbstractEventLoop | None = None  # its requests', once one waits
        _watches.add(self)

    async def settled(self, wait: Wait, body: dict, read: Callable[[], Awaitable[dict]],
                      written: bool = False) -> tuple[dict, dict[str, str]]:
        """`body` (an image's or a job's answer) once its jobs have ended or `wait` is
        over, read again by `read` after each wait, and the headers to answer with. An
        image's jobs are those of its current version. `written`: `body` answers a write
        that committed, so it stands if it cannot be read again, and the wait is for the
        version it wrote (not for one another client wrote meanwhile)."""
        deadline = asyncio.get_running_loop().time() + wait.seconds
        applied = False
        while ids := _pending(body):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or not await self.until_ended(ids, left, wait.request):
                break
            applied = not self._released  # a stopping server cut it short
            try:
                again = await read()
            except DarkroomError:
                if not written:
                    raise
                break
            if written and again["version"] != body["version"]:
                break  # superseded: the write's answer stands as it was
            body = again
        headers = {"Preference-Applied": f"wait={wait.seconds:g}"} \
            if wait.preferred and applied else {}
        return body, headers

    async def until_ended(self, job_ids: list[str], seconds: float,
                          request: Request | None = None) -> bool:
        """Wait until all of `job_ids` have ended, `seconds` are over, `request`'s client
        has gone or the server stops. False, at once, when it may not wait (the most
        waiters wait already, the server stops) or the client has gone."""
        if self._released or len(self._waiting) >= MAX_WAITERS:
            return False
        loop = self.loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._waiting[done] = set(job_ids)
        if self._poller is None or self._poller.done():  # not the request's context
            self._poller = loop.create_task(self._poll(), context=contextvars.Context())
        gone = asyncio.ensure_future(_hung_up(request)) if request is not None else None
        try:
            await asyncio.wait([asyncio.shield(done)] + ([gone] if gone else []),
                               timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            if gone is not None and gone.done():
                gone.exception()  # retrieved: a receive that failed counts as a hang-up
                return False
            return True
        finally:
            self._waiting.pop(done, None)
            if gone is not None:
                gone.cancel()

    def release(self) -> None:
        self._released = True
        for done in list(self._waiting):
            if not done.done():
                done.set_result(None)

    async def _poll(self) -> None:
        """Read the jobs waited on each tick while anyone waits; wake who may go on. A
        failed read is tried again at the next tick (the waits still end on time)."""
        failing = False
        while self._waiting:
            await asyncio.sleep(TICK_S)
            wanted = sorted(set().union(*self._waiting.values()))
            if not wanted:
                break
            try:
                over = await self._read_ended(wanted)
            except Exception as error:  # noqa: BLE001  (the database is down: wait on)
                if not failing:
                    log.warning("waited_jobs_not_read", error=str(error))
                failing = True
                continue
            failing = False
            for done, ids in list(self._waiting.items()):
                ids -= over
                if not ids and not done.done():
                    done.set_result(None)


def _pending(body: dict) -> list[str]:
    """The jobs `body` names that have not ended: a job's own answer, or an image's
    jobs of its current version."""
    jobs = [j for j in body["jobs"] if j["version"] == body["version"]] \
        if "jobs" in body else [body]
    return [job["id"] for job in jobs if job["status"] not in ENDED]


async def _hung_up(request: Request) -> None:
    """Return when the client of `request` (whose body was read) hangs up."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
