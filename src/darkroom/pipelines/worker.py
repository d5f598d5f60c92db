"""A pipeline worker: DBOS launched on the catalog's database, listening to the jobs' queue.

DBOS itself resumes the runs a restarting executor left pending (same executor id). A
worker that dies for good is darkroom's job: every worker writes a heartbeat row, and a
worker that finds another silent for `dead_after_s` claims it (one claimant wins) and
resumes its pending runs. DBOS is one per process, so so is a worker.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import timedelta

import structlog
from dbos import DBOS
from dbos import _workflow_commands as workflow_commands
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from darkroom.catalog import retention
from darkroom.catalog.db import make_engine
from darkroom.catalog.models import utcnow
from darkroom.catalog.pipeline_models import Worker as WorkerRow
from darkroom.config import Settings
from darkroom.engine import Rendered
from darkroom.errors import DarkroomError
from darkroom.events.dispatcher import dispatching
from darkroom.pipelines import admin, runner, sealing
from darkroom.pipelines.definition import load_yaml
from darkroom.pipelines.store import run
from darkroom.pipelines.context import Runtime
from darkroom.pipelines.queue import APP_VERSION, QUEUE, JobQueue, dbos_url, system_engine
from darkroom.storage.temps import process_alive

log = structlog.get_logger("darkroom.pipelines")
_lock = threading.Lock()
_active: Worker | None = None
BACKGROUND_JOBS_S = 60.0  # DBOS's sweep for due delays and deadlines (_slow_dbos_sweep)


def default_executor_id(role: str) -> str:
    return f"{socket.gethostname()}-{role}"


class Worker:
    """Start with `start()`, stop with `stop()`; runs jobs until stopped."""

    def __init__(self, settings: Settings, executor_id: str, engine: Engine | None = None,
                 dispatch: bool = False) -> None:
        self.settings = settings
        self.dispatch = dispatch  # also deliver the outbox and purge (a worker on its own)
        self.config = settings.pipelines
        self.executor_id = executor_id
        sealing.configure(settings)
        self.engine = engine or make_engine(settings.database_url)
        self.runtime: Runtime | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._dispatching: Future | None = None
        self._system_engine: Engine | None = None

    def start(self) -> None:
        global _active
        with _lock:
            if _active is not None:
                raise RuntimeError("a pipeline worker already runs in this process")
            _active = self
        try:
            self._heartbeat(first=True)
        except BaseException:
            with _lock:
                _active = None
            raise
        self.runtime = Runtime(self.settings, self.engine)
        runner.use_runtime(self.runtime)
        self._system_engine = system_engine(self.settings.database_url)
        DBOS(config={"name": "darkroom", "system_database_url": dbos_url(
            self.settings.database_url), "system_database_engine": self._system_engine,
            "executor_id": self.executor_id, "application_version": APP_VERSION,
            "log_level": "WARNING"})
        DBOS.listen_queues([QUEUE])
        _slow_dbos_sweep()
        DBOS.launch()
        DBOS.register_queue(QUEUE, worker_concurrency=self.config.concurrency,
                            polling_interval_sec=self.config.poll_s)
        self._beat = threading.Thread(target=self._beating, daemon=True, name="heartbeat")
        self._beat.start()
        if self.dispatch:
            self._dispatching = self.runtime.start(self._dispatch_until_stopped())
        log.info("pipeline_worker_started", executor=self.executor_id, pid=os.getpid())

    def stop(self) -> None:
        global _active
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=10)
        if self._dispatching is not None:
            self._dispatching.result(timeout=30)
        DBOS.destroy(workflow_completion_timeout_sec=5)
        if self._system_engine is not None:
            self._system_engine.dispose()
        runner.use_runtime(None)
        if self.runtime is not None:
            self.runtime.close()
        with _lock:
            _active = None
        log.info("pipeline_worker_stopped", executor=self.executor_id)

    async def _dispatch_until_stopped(self) -> None:
        """Deliver the outbox and purge what is due (`catalog.retention`) until stopped."""
        queue = JobQueue(self.settings.database_url)
        try:
            async with retention.purging(self.engine, queue, self.settings.retention,
                                         self.runtime.storage), \
                    dispatching(self.engine, self.settings.events):
                while not self._stop.is_set():
                    await asyncio.sleep(0.2)
        finally:
            queue.close()

    def _beating(self) -> None:
        while not self._stop.wait(self.config.heartbeat_s):
            try:
                self._heartbeat()
                for dead in self._claim_dead():
                    self._resume(dead)
            except Exception:  # a database hiccup must not end the heartbeats
                log.exception("heartbeat_failed", executor=self.executor_id)

    def _heartbeat(self, first: bool = False) -> None:
        now, host, pid = utcnow(), socket.gethostname(), os.getpid()
        with Session(self.engine) as session, session.begin():
            row = session.get(WorkerRow, self.executor_id, with_for_update=True)
            if row is None:
                session.add(WorkerRow(executor_id=self.executor_id, pid=pid, hostname=host,
                                      started_at=now, heartbeat_at=now))
                return
            if first and _alive_elsewhere(row, now, self.config.dead_after_s):
                raise DarkroomError(f"executor id {self.executor_id!r} is in use by pid "
                                    f"{row.pid} on {row.hostname}: give each worker its "
                                    "own --id", "bad_config")
            if row.recovered_at is not None and not first:
                log.error("worker_presumed_dead", executor=self.executor_id,
                          claimed_at=row.recovered_at.isoformat())
            row.heartbeat_at, row.pid, row.hostname, row.recovered_at = now, pid, host, None
            if first:
                row.started_at = now

    def _claim_dead(self) -> list[str]:
        """Executors silent past `dead_after_s` that this worker won the claim on."""
        cutoff = utcnow() - timedelta(seconds=self.config.dead_after_s)
        claimed = []
        with Session(self.engine) as session, session.begin():
            silent = session.scalars(select(WorkerRow.executor_id).where(
                WorkerRow.heartbeat_at < cutoff, WorkerRow.recovered_at.is_(None))).all()
            for executor in silent:
                won = session.execute(update(WorkerRow).where(
                    WorkerRow.executor_id == executor, WorkerRow.recovered_at.is_(None),
                    WorkerRow.heartbeat_at < cutoff).values(recovered_at=utcnow()))
                if won.rowcount == 1:
                    claimed.append(executor)
        return claimed

    def _resume(self, executor: str) -> None:
        pending = DBOS.list_workflows(status="PENDING", executor_id=executor)
        for workflow in pending:
            DBOS.resume_workflow(workflow.workflow_id)
        log.warning("dead_worker_recovered", dead=executor, by=self.executor_id,
                    runs=len(pending))


def _slow_dbos_sweep() -> None:
    """Before DBOS launches: its once-a-second look for delayed workflows that are due and
    for workflows past their deadline (on SQLite, two write transactions, each taking the
    write lock) made once a minute, as darkroom sets neither a delay nor a deadline. (The
    interval is private to DBOS: a release that renames it keeps its own, with a
    warning.)"""
    if not hasattr(workflow_commands, "_BACKGROUND_JOBS_INTERVAL_SEC"):
        log.warning("dbos_sweep_not_slowed")
        return
    workflow_commands._BACKGROUND_JOBS_INTERVAL_SEC = BACKGROUND_JOBS_S


def _alive_elsewhere(row: WorkerRow, now, dead_after_s: float) -> bool:
    """Whether another live process holds this executor id: a fresh heartbeat from another
    host, or a running process with the recorded pid on this one."""
    if (now - row.heartbeat_at).total_seconds() > dead_after_s:
        return False
    if row.hostname != socket.gethostname():
        return True
    return row.pid != os.getpid() and process_alive(row.pid)


class InProcess:
    """The server's own worker: started once a pipeline exists, if `in_process` is set."""

    def __init__(self, settings: Settings, engine: Engine, index: int) -> None:
        self.settings = settings
        self.engine = engine
        self.executor_id = default_executor_id(f"serve-{settings.port}-{index}")
        self.worker: Worker | None = None
        self._starting = threading.Lock()

    def start_if_needed(self) -> None:
        """Start the worker (blocking: call from a thread) unless off, running or idle."""
        if not self.settings.pipelines.in_process:
            return
        with self._starting:
            if self.worker is None and run(self.engine, admin.any_pipeline):
                worker = Worker(self.settings, self.executor_id, self.engine)
                worker.start()
                self.worker = worker

    def stop(self) -> None:
        with self._starting:
            if self.worker is not None:
                self.worker.stop()
                self.worker = None

    def prerender(self, works: dict[str, Callable[[], Rendered]],
                  stored: dict[str, Rendered]) -> int:
        """`Runtime.prerender` on the worker's runtime, if it runs and the server is one
        process (with several, another's worker would likely run the job); how many
        started."""
        worker = self.worker
        runtime = worker.runtime if worker is not None else None
        if runtime is None or self.settings.workers != 1:
            return 0
        return runtime.prerender(works, stored)


def apply_file(settings: Settings, engine: Engine) -> int:
    """Save the pipelines of `pipelines.file` in the catalog; how many."""
    if settings.pipelines.file is None:
        return 0
    try:
        text = settings.pipelines.file.read_text()
    except OSError as error:
        raise DarkroomError(f"cannot read pipelines.file: {error}", "bad_config") from None
    pipelines = load_yaml(text)
    run(engine, lambda s: [admin.save_pipeline(s, p) for p in pipelines])
    return len(pipelines)
