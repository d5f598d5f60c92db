"""A pipeline run as one DBOS workflow: each attempt of each step is a DBOS step.

DBOS checkpoints every attempt's outcome, so after a crash the workflow replays what was
done and runs again only the attempt that was under way. Waits between retries are DBOS's
durable sleeps. Step outcomes come back as data (`{"ok": ...}`), never as exceptions, so a
failure is recorded once and decided on by the retry and catch rules of the definition.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import structlog
from dbos import DBOS

from darkroom.catalog.models import utcnow
from darkroom.errors import DarkroomError
from darkroom.pipelines import registry, store
from darkroom.pipelines.context import Runtime, Source, StepContext
from darkroom.pipelines.definition import TIMEOUT, Pipeline, Step, cached, matches
from darkroom.server.observability import JOBS, STEPS

log = structlog.get_logger("darkroom.pipelines")
WORKFLOW = "darkroom.pipeline"
MAX_TRANSITIONS = 200  # a catch loop cannot run forever
_runtime: Runtime | None = None
_steps = ThreadPoolExecutor(64, thread_name_prefix="step")


def use_runtime(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def _rt() -> Runtime:
    if _runtime is None:
        raise RuntimeError("pipeline runtime not started")
    return _runtime


@DBOS.workflow(name=WORKFLOW, max_recovery_attempts=1000)
def run_pipeline(job_id: str, run: int) -> str:
    """Run job `job_id` (its run number `run`); the job's final status."""
    loaded = DBOS.run_step({"name": "begin"}, _begin, job_id, run)
    if loaded is None:
        return "skipped"
    pipeline = cached(Pipeline, loaded["definition"])
    outputs: dict[str, dict] = dict(loaded["done"])
    caught: dict | None = None
    name: str | None = pipeline.steps[0].name
    for _ in range(MAX_TRANSITIONS):
        if name is None:
            DBOS.run_step({"name": "finish"}, _finish, job_id, run, None)
            JOBS.labels(pipeline.name, "succeeded").inc()
            return "succeeded"
        step = pipeline.step(name)
        if name in loaded["done"]:  # a retried job keeps what its earlier runs did
            name = pipeline.after(step)
            continue
        outcome = _attempts(job_id, pipeline, step, loaded["source"], outputs, caught)
        if outcome["ok"]:
            outputs[name], caught = outcome["output"], None
            name = pipeline.after(step)
            continue
        catcher = next((c for c in step.catch if matches(c.errors, outcome["error"])), None)
        if catcher is None:
            break
        caught = {"error": outcome["error"], "message": outcome["message"], "step": name}
        DBOS.run_step({"name": f"caught:{name}"}, _mark, job_id, name, "caught")
        name = catcher.next
    else:
        outcome = {"error": "too_many_transitions",
                   "message": f"more than {MAX_TRANSITIONS} steps ran", "step": name}
    error = {"error": outcome["error"], "message": outcome["message"], "step": name}
    DBOS.run_step({"name": "finish"}, _finish, job_id, run, error)
    JOBS.labels(pipeline.name, "failed").inc()
    return "failed"


def _attempts(job_id: str, pipeline: Pipeline, step: Step, source: dict,
              outputs: dict, caught: dict | None) -> dict:
    """Try `step` until it succeeds or no retrier applies; the last outcome."""
    used = [0] * len(step.retry)
    while True:
        outcome = DBOS.run_step({"name": f"step:{step.name}"}, _attempt, job_id,
                                pipeline.name, step.model_dump(mode="json"), source,
                                outputs, caught)
        if outcome["ok"]:
            return outcome
        index = next((i for i, r in enumerate(step.retry)
                      if matches(r.errors, outcome["error"])), None)
        if index is None or used[index] >= step.retry[index].max_attempts:
            return outcome
        used[index] += 1
        fraction = DBOS.run_step({"name": "jitter"}, random.random)
        DBOS.sleep(step.retry[index].delay(used[index], fraction))


def _attempt(job_id: str, pipeline: str, step_json: dict, source: dict, outputs: dict,
             caught: dict | None) -> dict:
    step = cached(Step, step_json)
    kind = registry.get(step.type)
    runtime = _rt()
    ctx = StepContext(runtime, job_id, pipeline, step.name, Source(**source), outputs, caught)
    started = utcnow()
    store.run(runtime.engine, lambda s: store.begin_step(s, job_id, step.name, started))
    clock = time.perf_counter()
    try:
        future = _steps.submit(kind.run, ctx, cached(kind.params, step.params))
        output = future.result(timeout=step.timeout_s)
    except FutureTimeout:
        code, message = TIMEOUT, f"step {step.name!r} ran past {step.timeout_s} s"
    except DarkroomError as error:
        code, message = error.code, error.message
    except Exception as error:  # a step's bug fails the step, not the worker
        log.exception("step_crashed", job=job_id, step=step.name)
        code, message = "internal", f"{type(error).__name__}: {error}"
    else:
        store.run(runtime.engine, lambda s: store.end_step(
            s, job_id, step.name, "succeeded", started, output=output))
        STEPS.labels(step.type, "succeeded").observe(time.perf_counter() - clock)
        log.info("step_succeeded", job=job_id, step=step.name,
                 ms=round((time.perf_counter() - clock) * 1000, 1))
        return {"ok": True, "output": output}
    STEPS.labels(step.type, code).observe(time.perf_counter() - clock)
    store.run(runtime.engine, lambda s: store.end_step(
        s, job_id, step.name, "failed", started, error=f"{code}: {message}"))
    log.warning("step_failed", job=job_id, step=step.name, error=code, message=message)
    return {"ok": False, "error": code, "message": message}


def _begin(job_id: str, run: int) -> dict | None:
    return store.run(_rt().engine, lambda s: store.begin_job(s, job_id, run))


def _finish(job_id: str, run: int, error: dict | None) -> None:
    store.run(_rt().engine, lambda s: store.finish_job(s, job_id, run, error))
    log.info("job_finished", job=job_id, run=run, error=(error or {}).get("error"))


def _mark(job_id: str, name: str, state: str) -> None:
    store.run(_rt().engine, lambda s: store.mark_step(s, job_id, name, state))
