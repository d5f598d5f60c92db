"""Answers that wait for jobs to end, so that a client need not poll: `?wait=<seconds>`
or `Prefer: wait=<seconds>` (RFC 7240) on `GET /v1/jobs/{id}`, `GET /v1/images/{id}`,
`POST /v1/images` and `PUT /v1/images/{id}`.

The answer comes as soon as every job it names has ended (succeeded, failed or been
cancelled), or once the wait is over, whichever is first; it is then read afresh, so the
client sees the renditions made meanwhile and, by the jobs' statuses, whether they ended.
One poller per process serves every waiting request: a single query a tick for the jobs
they all wait on, whichever process runs those jobs. Past `MAX_WAITERS` requests waiting
in a process, the next ones are answered at once, as if they had not asked to wait.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import structlog
from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from darkroom.catalog.models import Job
from darkroom.errors import NotFound
from darkroom.pipelines.admin import ENDED

log = structlog.get_logger("darkroom.server")

MAX_WAIT_S = 60.0
TICK_S = 0.1  # how often the jobs waited on are read again
CHUNK = 500  # job ids a query reads at most
MAX_WAITERS = 1000  # requests waiting at once in a process
_PREFER = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d{1,6}(?:\.\d{1,3})?)\"?", re.IGNORECASE)


@dataclass(frozen=True)
class Wait:
    """How long a request asked to wait, and whether it asked by `Prefer`."""

    seconds: float = 0.0
    preferred: bool = False

    def headers(self) -> dict[str, str]:
        return {"Preference-Applied": f"wait={self.seconds:g}"} if self.preferred else {}


def asked(query: float | None, request: Request) -> Wait:
    """The wait `request` asks for: `?wait=` (`query`, validated by its route), else
    `Prefer: wait=`, cut to `MAX_WAIT_S`; a `Prefer` that does not parse is ignored, as
    RFC 7240 has it."""
    if query is not None:
        return Wait(query)
    found = _PREFER.search(request.headers.get("prefer", ""))
    return Wait(min(float(found.group(1)), MAX_WAIT_S), True) if found else Wait()


def pending(jobs: Iterable[dict]) -> list[str]:
    """The ids of the jobs among `jobs` (as the API answers them) that have not ended."""
    return [job["id"] for job in jobs if job["status"] not in ENDED]


def ended(session: Session, job_ids: list[str]) -> set[str]:
    """Which of `job_ids` have ended (an id no job has counts as ended: it was deleted)."""
    found: dict[str, str] = {}
    for start in range(0, len(job_ids), CHUNK):
        chunk = job_ids[start:start + CHUNK]
        found.update(session.execute(
            select(Job.id, Job.status).where(Job.id.in_(chunk))).all())
    return {job_id for job_id in job_ids if found.get(job_id, ENDED[0]) in ENDED}


class JobWatch:
    """Waits for jobs to end, for every request of this process, with one poller."""

    def __init__(self, read_ended: Callable[[list[str]], Awaitable[set[str]]]) -> None:
        self._read_ended = read_ended
        self._waiting: dict[asyncio.Future, set[str]] = {}
        self._poller: asyncio.Task | None = None

    async def until_ended(self, job_ids: list[str], seconds: float) -> None:
        """Return once all of `job_ids` have ended, or after `seconds` (at once when
        `MAX_WAITERS` requests wait already)."""
        if not job_ids or seconds <= 0 or len(self._waiting) >= MAX_WAITERS:
            return
        done = asyncio.get_running_loop().create_future()
        self._waiting[done] = set(job_ids)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        try:
            await asyncio.wait_for(asyncio.shield(done), seconds)
        except TimeoutError:
            pass
        finally:
            self._waiting.pop(done, None)

    async def _poll(self) -> None:
        """Read the jobs waited on each tick while anyone waits; wake who may go on. A
        failed read is tried again at the next tick (the waits still end on time)."""
        while self._waiting:
            await asyncio.sleep(TICK_S)
            wanted = sorted(set().union(*self._waiting.values()))
            try:
                over = await self._read_ended(wanted)
            except Exception as error:  # noqa: BLE001  (the database is down: wait on)
                log.warning("waited_jobs_not_read", error=str(error))
                continue
            for done, ids in list(self._waiting.items()):
                ids -= over
                if not ids and not done.done():
                    done.set_result(None)

    async def settled(self, wait: Wait, body: dict, read: Callable[[], Awaitable[dict]],
                      keep_if_gone: bool = False) -> dict:
        """`body` (an image's or a job's answer) once its jobs have ended or `wait` is
        over: read again by `read` if it named any job still under way. An image's jobs
        are those of its current version. With `keep_if_gone`, `body` stands if what it
        answers has been deleted meanwhile (an upload's answer)."""
        jobs = [j for j in body["jobs"] if j["version"] == body["version"]] \
            if "jobs" in body else [body]
        ids = pending(jobs)
        if not ids or wait.seconds <= 0:
            return body
        await self.until_ended(ids, wait.seconds)
        try:
            return await read()
        except NotFound:
            if keep_if_gone:
                return body
            raise
