"""A pipeline run as one DBOS workflow, checkpointed attempt by attempt.

Each attempt of a step records its outcome in the catalog (`job_attempts`) in the
transaction that ends the step, so after a crash DBOS replays the workflow, the attempts
that ended answer from their records, and only the attempt that was under way runs again.
(A DBOS step around each attempt recorded the same in two more transactions.) On SQLite
the transaction that ends a good run also records the workflow's success in DBOS's
tables (`dbos_sqlite.Success`), which DBOS then does not write again. Waits
between retries are DBOS's durable sleeps, their jitter a DBOS step. Step outcomes come
back as data (`{"ok": ...}`), never as exceptions, so a failure is recorded once and
decided on by the retry and catch rules of the definition.
"""

from __future__ import annotations

import itertools
import random
import time
import threading
from collections.abc import Iterator
from concurrent.futures import Future, wait
from concurrent.futures import TimeoutError as FutureTimeout

import structlog
from dbos import DBOS
from pydantic import ValidationError
from sqlalchemy import Connection

from darkroom.catalog.models import utcnow
from darkroom.errors import DarkroomError
from darkroom.pipelines import dbos_sqlite, registry, store, sweep
from darkroom.pipelines.context import Runtime, Source, StepContext, take_back
from darkroom.pipelines.definition import TIMEOUT, Pipeline, Step, cached, matches
from darkroom.server.observability import JOBS, STEPS

log = structlog.get_logger("darkroom.pipelines")
WORKFLOW = "darkroom.pipeline"
MAX_TRANSITIONS = 200  # a catch loop cannot run forever
# The job's own bookkeeping rides out a database hiccup; after that the run fails cleanly
# (DBOS's retries of the bookkeeping steps; `store.run_steadily` does the same for attempts).
BOOKKEEPING = {"retries_allowed": True, "max_attempts": store.TRIES,
               "interval_seconds": store.FIRST_WAIT_S, "backoff_rate": 2.0}
_runtime: Runtime | None = None
_inflight: dict[tuple[str, str], Future] = {}  # (job, step) -> its latest attempt
_inflight_lock = threading.Lock()
FINISHED = {"finished": True}  # _run_steps' answer when the last attempt ended the job
SKIPPED = {"skipped": True}  # ... when an attempt found the job no longer this run's
SUCCEEDED = "succeeded"  # a good run's answer


def use_runtime(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def _rt() -> Runtime:
    if _runtime is None:
        raise RuntimeError("pipeline runtime not started")
    return _runtime


@DBOS.workflow(name=WORKFLOW, max_recovery_attempts=1000)
def run_pipeline(job_id: str, run: int, start: dict) -> str:
    """Run job `job_id` (its run number `run`) from `start` (`store.job_start`, fixed at
    enqueue); the job's final status."""
    try:
        pipeline = cached(Pipeline, start["definition"])
    except ValueError as failure:  # e.g. a secret sealed with a key no longer configured
        message = failure.errors()[0]["msg"] if isinstance(failure, ValidationError) else \
            str(failure)
        log.error("definition_unreadable", job=job_id, run=run, error=message)
        DBOS.run_step({"name": "finish", **BOOKKEEPING}, _finish, job_id, run,
                      start["definition"].get("name", ""), {
                          "error": "definition_unreadable", "message": message, "step": None})
        return "failed"
    try:
        error = _run_steps(job_id, run, pipeline, start)
    except Exception as failure:  # a bug, or a database gone for good: never left running
        log.exception("run_crashed", job=job_id, run=run)
        error = {"error": "internal", "message": f"{type(failure).__name__}: {failure}",
                 "step": None}
    if error is SKIPPED:
        return "skipped"
    if error is not FINISHED:
        DBOS.run_step({"name": "finish", **BOOKKEEPING}, _finish, job_id, run, pipeline.name,
                      error)
    return SUCCEEDED if error is None or error is FINISHED else "failed"


def _run_steps(job_id: str, run: int, pipeline: Pipeline, start: dict) -> dict | None:
    """Walk the steps from the first: FINISHED when the last step's attempt also finished
    the job, SKIPPED when an attempt found the job no longer this run's (cancelled, say),
    None when the run ended well otherwise, else its error. The run's first attempt also
    starts the job."""
    outputs: dict[str, dict] = dict(start["done"])
    caught: dict | None = None
    begun = False
    seqs = itertools.count()  # the attempts' places in the run: the same on a replay
    name: str | None = pipeline.steps[0].name
    for _ in range(MAX_TRANSITIONS):
        if name is None:
            return None
        step = pipeline.step(name)
        if name in start["done"]:  # a retried job keeps what its earlier runs did
            name = pipeline.after(step)
            continue
        context = {"job_id": job_id, "run": run, "pipeline": pipeline.name,
                   "source": start["source"], "outputs": outputs, "caught": caught,
                   "last": pipeline.after(step) is None, "first": not begun}
        outcome = _attempts(step, context, seqs)
        if outcome.get("skipped"):
            return SKIPPED
        begun = True
        if outcome["ok"]:
            if outcome.get("finished"):
                return FINISHED
            outputs[name], caught = outcome["output"], None
            name = pipeline.after(step)
            continue
        catcher = next((c for c in step.catch if matches(c.errors, outcome["error"])), None)
        if catcher is None:
            return {"error": outcome["error"], "message": outcome["message"], "step": name}
        caught = {"error": outcome["error"], "message": outcome["message"], "step": name}
        DBOS.run_step({"name": f"caught:{name}", **BOOKKEEPING}, _mark, job_id, name,
                      "caught")
        name = catcher.next
    return {"error": "too_many_transitions", "message": f"more than {MAX_TRANSITIONS} "
            "steps ran", "step": name}


def _attempts(step: Step, context: dict, seqs: Iterator[int]) -> dict:
    """Try `step` until it succeeds or no retrier applies; the last outcome."""
    used = [0] * len(step.retry)
    while True:
        outcome = _attempt(step, context, next(seqs))
        if outcome["ok"] or outcome.get("skipped"):
            return outcome
        index = next((i for i, r in enumerate(step.retry)
                      if matches(r.errors, outcome["error"])), None)
        if index is None or used[index] >= step.retry[index].max_attempts:
            return outcome
        used[index] += 1
        fraction = DBOS.run_step({"name": "jitter"}, random.random)
        DBOS.sleep(step.retry[index].delay(used[index], fraction))


def _attempt(step: Step, context: dict, seq: int) -> dict:
    """Attempt `seq` of the run, of `step`: its outcome as data, recorded when it ends (as
    it was recorded, if it ended before the run was replayed). Attempts of one step never
    overlap: one that ran past its timeout is waited for before the next starts (its
    thread cannot be stopped; renders, storage and webhooks have their own time limits)."""
    kind = registry.get(step.type)
    runtime = _rt()
    job_id, run = context["job_id"], context["run"]
    with _inflight_lock:
        previous = _inflight.pop((job_id, step.name), None)
    if previous is not None:
        wait([previous])
    started = utcnow()

    standing = store.run_steadily(runtime.engine, lambda c: store.begin_attempt(
        c, job_id, run, seq, step.name, started, context["first"]))
    if standing is not None:
        return standing
    ctx = StepContext(runtime, job_id, run, context["pipeline"], step.name,
                      Source.load(context["source"]), context["outputs"], context["caught"])
    clock = time.perf_counter()
    future = runtime.steps.submit(kind.run, ctx, cached(kind.params, step.params))
    try:  # the last step's end also ends the job, in the same transaction
        outcome = {"ok": True, "output": future.result(timeout=step.timeout_s),
                   **(FINISHED if context["last"] else {})}
    except FutureTimeout:
        with _inflight_lock:
            _inflight[(job_id, step.name)] = future
        outcome = _failure(TIMEOUT, f"step {step.name!r} ran past {step.timeout_s} s")
    except DarkroomError as error:
        outcome = _failure(error.code, error.message)
    except Exception as error:  # a step's bug fails the step, not the worker
        log.exception("step_crashed", job=job_id, step=step.name)
        outcome = _failure("internal", f"{type(error).__name__}: {error}")
    seconds = time.perf_counter() - clock
    endings = ctx.ending.close()
    success = dbos_sqlite.Success.of(runtime.engine, SUCCEEDED) if outcome.get(
        "finished") else None  # (the run returns SUCCEEDED once its job ended here)
    try:
        standing, ended = store.end_attempt(runtime.engine, job_id, run, seq, step.name,
                                            started, outcome, [w for w, _ in endings],
                                            success and success.write)
    except BaseException:
        take_back(endings)  # nothing of the step's is catalogued
        raise
    if success is not None and ended:
        success.settle()
    if not standing["ok"]:
        take_back(endings)
    shown = standing  # what was recorded, or recorded first
    if standing.get("skipped"):  # the job is gone (its image deleted): nothing recorded
        shown = outcome if not outcome["ok"] else _failure(
            "image_gone", f"job {job_id} is gone: its image was deleted")
    STEPS.labels(step.type, "succeeded" if shown["ok"] else shown["error"]).observe(seconds)
    if shown["ok"]:
        log.info("step_succeeded", job=job_id, step=step.name, ms=round(seconds * 1000, 1))
    else:
        log.warning("step_failed", job=job_id, step=step.name, error=shown["error"],
                    message=shown["message"])
    if shown.get("finished"):
        _finished(context["pipeline"], job_id, run, None, ended)
    return standing


def _failure(code: str, message: str) -> dict:
    return {"ok": False, "error": code, "message": message}


def _finish(job_id: str, run: int, pipeline: str, error: dict | None) -> None:
    """End the run (see `store.finish_run`: also one that no attempt started, as when a
    retried job had every step done already); a failure also deletes the renditions the
    job leaves behind (`sweep`), after the commit."""
    def end(db: Connection) -> tuple[bool, set[str]]:
        ended = store.finish_run(db, job_id, run, error)
        failed = error is not None and (ended or store.failed_run(db, job_id, run))
        return ended, sweep.leftovers(db, job_id) if failed else set()  # (a replay: again)

    ended, left = store.run_plain(_rt().engine, end)
    sweep.sweep_left(lambda work: store.run_steadily(_rt().engine, work), job_id, run, left,
                     _rt().storage.blocking.delete)
    _finished(pipeline, job_id, run, error, ended)


def _finished(pipeline: str, job_id: str, run: int, error: dict | None, ended: bool) -> None:
    """Count and log a job's end (`ended`: this call ended it; False if it was cancelled,
    retried or finished before)."""
    if ended:
        JOBS.labels(pipeline, "failed" if error else "succeeded").inc()
    log.info("job_finished", job=job_id, run=run, error=(error or {}).get("error"))


def _mark(job_id: str, name: str, state: str) -> None:
    store.run_plain(_rt().engine, lambda s: store.mark_step(s, job_id, name, state))
