"""Pipelines and jobs as the API and the CLI manage them: functions over a `Session`."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from darkroom.catalog import repository
from darkroom.catalog.models import Job, utcnow, workflow_id
from darkroom.catalog.pipeline_models import JobAttempt, JobStep, PipelineRow
from darkroom.errors import BadRequest, Conflict, NotFound
from darkroom.pipelines import store, sweep
from darkroom.pipelines.context import Source
from darkroom.pipelines.definition import Pipeline, cached
from darkroom.pipelines.queue import JobQueue
from darkroom.pipelines.sealing import MASK, SECRET_PARAMS, masked_url, unseal_params

MAX_LIMIT = 100
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ENDED = STATUSES[2:]  # a job in one of these runs no more (unless retried)
HISTORY = 200  # attempts a job shows, the latest (a catch loop may make many)


def save_pipeline(session: Session, pipeline: Pipeline) -> tuple[dict, bool]:
    """Create or replace a pipeline; its public form and whether it is new. A definition
    copied from a masked answer is refused rather than saved with the mask as its key."""
    if MASK in json.dumps(pipeline.model_dump()):  # (its JSON form is sealed: `sealing`)
        raise BadRequest("the definition holds a masked secret ('**********'); send the "
                         "real value", "bad_pipeline")
    row = session.get(PipelineRow, pipeline.name)
    created = row is None
    if row is None:
        row = PipelineRow(name=pipeline.name)
        session.add(row)
    row.definition, row.updated_at = pipeline.model_dump(mode="json"), utcnow()
    session.flush()
    return public_pipeline(row), created


def list_pipelines(session: Session) -> list[dict]:
    return [public_pipeline(r) for r in session.scalars(select(PipelineRow)
                                                        .order_by(PipelineRow.name))]


def get_pipeline(session: Session, name: str) -> dict:
    return public_pipeline(_pipeline_row(session, name))


def delete_pipeline(session: Session, name: str) -> None:
    """Delete a pipeline; its runs already made go on with the definition they hold."""
    session.delete(_pipeline_row(session, name))


def any_pipeline(session: Session) -> bool:
    return session.scalars(select(PipelineRow.name).limit(1)).first() is not None


def public_pipeline(row: PipelineRow) -> dict:
    """The definition with secrets masked, and its timestamps."""
    return {**_masked(row.definition), "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat()}


def _masked(value: object, field: str = "") -> object:
    """`value` with every secret-named field, at any depth, replaced by the mask, and
    every `url` cut to where it points (`sealing.masked_url`)."""
    if isinstance(value, dict):
        return {k: MASK if k in SECRET_PARAMS else _masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, field) for v in value]
    if field == "url" and isinstance(value, str):
        try:
            return masked_url(unseal_params({"url": value})["url"])
        except ValueError:  # sealed with a key no longer known
            return MASK
    return value


def _pipeline_row(session: Session, name: str) -> PipelineRow:
    row = session.get(PipelineRow, name)
    if row is None:
        raise NotFound(f"no pipeline {name!r}", "pipeline_not_found")
    return row


@dataclass(frozen=True)
class JobQuery:
    status: str | None = None
    pipeline: str | None = None
    image_id: str | None = None
    limit: int = 50
    cursor: str | None = None  # the id of the last job of the previous page


def list_jobs(session: Session, query: JobQuery) -> dict:
    """Jobs newest first (ties by id), filtered; `next_cursor` fetches the next page."""
    select_jobs = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
    if query.status:
        if query.status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}", "bad_param")
        select_jobs = select_jobs.where(Job.status == query.status)
    if query.pipeline:
        select_jobs = select_jobs.where(Job.pipeline == query.pipeline)
    if query.image_id:
        select_jobs = select_jobs.where(Job.image_id == query.image_id)
    if query.cursor:
        last = session.get(Job, query.cursor)
        if last is None:
            raise BadRequest("bad cursor", "bad_cursor")
        select_jobs = select_jobs.where(
            (Job.created_at < last.created_at)
            | ((Job.created_at == last.created_at) & (Job.id < last.id)))
    jobs = session.scalars(select_jobs.limit(query.limit + 1)).all()
    page = jobs[:query.limit]
    return {"items": [job_summary(j) for j in page],
            "next_cursor": page[-1].id if len(jobs) > query.limit else None}


def job_summary(job: Job) -> dict:
    return {"id": job.id, "pipeline": job.pipeline, "image_id": job.image_id,
            "version": job.version, "trigger": job.trigger, "run": job.run,
            "status": job.status, "error": job.error, "created_at": _iso(job.created_at),
            "started_at": _iso(job.started_at), "finished_at": _iso(job.finished_at)}


def job_detail(session: Session, job_id: str) -> dict:
    """The job, each step's state, attempts, duration, error and output, and the history
    of its attempts over every run (the latest `HISTORY`, oldest first)."""
    job = _job(session, job_id)
    steps = session.scalars(select(JobStep).where(JobStep.job_id == job_id)
                            .order_by(JobStep.position)).all()
    attempts = session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id)
                               .order_by(JobAttempt.run.desc(), JobAttempt.seq.desc())
                               .limit(HISTORY)).all()
    return {**job_summary(job), "steps": [
        {"name": s.name, "type": s.kind, "state": s.state, "attempts": s.attempts,
         "started_at": _iso(s.started_at), "finished_at": _iso(s.finished_at),
         "duration_ms": s.duration_ms, "error": s.error, "output": _masked(s.output)}
        for s in steps], "history": [_history_entry(a) for a in reversed(attempts)]}


def _history_entry(attempt: JobAttempt) -> dict:
    outcome = attempt.outcome
    return {"run": attempt.run, "step": attempt.step,
            "status": "succeeded" if outcome["ok"] else "failed",
            "error": None if outcome["ok"] else store.error_text(outcome),
            "started_at": _iso(attempt.started_at), "finished_at": _iso(attempt.finished_at),
            "duration_ms": store.duration_ms(attempt.started_at, attempt.finished_at)}


def run_pipeline(session: Session, queue: JobQueue, name: str, image_id: str) -> dict:
    """Start pipeline `name` on the image's current version now, whatever its trigger
    (a backfill, or a run again after the pipeline changed); the job's summary."""
    pipeline = cached(Pipeline, _pipeline_row(session, name).definition)
    image = repository.claim_existing(session, image_id)
    _image, version = repository.get_image(session, image.id)
    job = store.new_job(session, pipeline, image, version, "manual")
    queue.enqueue(session, job, Source.of(image, version))
    return job_summary(job)


def retry_job(session: Session, queue: JobQueue, job_id: str) -> dict:
    """Run a failed or cancelled job again as its next run; steps that succeeded are kept."""
    current = _job(session, job_id)
    repository.lock_image(session, current.image_id)  # a sweep of its leftovers, first
    job = store.set_job(session, job_id, ("failed", "cancelled"), current.run,
                        run=current.run + 1, status="queued", error=None, finished_at=None)
    if job is None:
        raise Conflict(f"job {job_id} is {current.status}; only failed or cancelled jobs "
                       "are retried", "job_not_retryable")
    session.execute(update(JobStep).where(JobStep.job_id == job_id,
                                          JobStep.state != "succeeded")
                    .values(state="pending"))
    queue.enqueue(session, job)
    return job_summary(job)


def cancel_job(session: Session, job_id: str) -> tuple[dict, str, set[str]]:
    """Mark a queued or running job cancelled; its summary, the workflow id to cancel and
    the renditions it leaves behind (`sweep.leftovers`), to delete after the commit."""
    current = _job(session, job_id)
    job = store.set_job(session, job_id, ("queued", "running"), None, status="cancelled",
                        error="cancelled", finished_at=utcnow())
    if job is None:
        raise Conflict(f"job {job_id} is {current.status}; only queued or running jobs are "
                       "cancelled", "job_not_cancellable")
    return job_summary(job), workflow_id(job.id, job.run), sweep.leftovers(session, job_id)


def _job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}", "job_not_found")
    return job


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None
