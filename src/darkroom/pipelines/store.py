"""The pipelines' catalog reads and writes, as functions over a `Session` or a plain
`Connection` (one transaction each).

Every write here may run twice (a step is retried after a crash), so each is written to
be harmless the second time: inserts ignore a row already there, job events have ids
fixed by job, run and state, and a finished or cancelled job is never changed again.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import structlog
from sqlalchemy import Connection, Engine, Row, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from darkroom.catalog import prepared, repository
from darkroom.catalog.models import Image, ImageVersion, Job, OutboxEvent, Rendition, utcnow
from darkroom.catalog.pipeline_models import JobStep
from darkroom.errors import NotFound
from darkroom.pipelines.context import Source
from darkroom.pipelines import statements as sql
from darkroom.pipelines.definition import Pipeline

T = TypeVar("T")
log = structlog.get_logger("darkroom.pipelines")
STOPPED = {"ok": False, "skipped": True}  # the outcome of an attempt whose job stopped
TRANSIENT = (OperationalError, InterfaceError)  # the database's, not the statement's fault
TRIES, FIRST_WAIT_S = 8, 0.5  # bookkeeping retries: the first wait, doubling after


def run(engine: Engine, work: Callable[[Session], T]) -> T:
    """`work` in one transaction on `engine`, committed when it returns."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        return work(session)


def run_plain(engine: Engine, work: Callable[[Connection], T]) -> T:
    """`work` in one transaction on a plain connection: for the runs' own statements (no
    entities), at half the cost of an ORM session."""
    with engine.begin() as connection:
        return work(connection)


def run_steadily(engine: Engine, work: Callable[[Connection], T], tries: int = TRIES,
                 wait_s: float = FIRST_WAIT_S) -> T:
    """`run_plain`, tried again after a database error (a restart, a lock held too long):
    up to `tries` times, waiting `wait_s` and twice as long after each failure; the last
    error is raised. `work` must be harmless to repeat (see the module's docstring)."""
    for attempt in range(1, tries):
        try:
            return run_plain(engine, work)
        except TRANSIENT:
            log.warning("bookkeeping_retried", attempt=attempt, exc_info=True)
            time.sleep(wait_s * 2 ** (attempt - 1))
    return run_plain(engine, work)


def new_job(db: Session | Connection, pipeline: Pipeline, image: Image,
            version: ImageVersion, trigger: str) -> Job:
    """A queued job of `pipeline` over `version`, with a pending row per step (plain
    INSERTs, as an upload's; the job returned is not the session's)."""
    now = utcnow()
    values = {"id": uuid.uuid4().hex, "image_id": image.id, "version": version.number,
              "pipeline": pipeline.name, "status": "queued", "trigger": trigger, "run": 1,
              "definition": pipeline.model_dump(mode="json"), "created_at": now,
              "updated_at": now}
    prepared.execute(db, sql.INSERT_JOB, values)
    prepared.execute(db, sql.INSERT_STEP, [
        {"job_id": values["id"], "name": step.name, "position": i, "kind": step.type,
         "state": "pending", "attempts": 0} for i, step in enumerate(pipeline.steps)])
    return Job(**values)


def set_job(db: Session | Connection, job_id: str, statuses: tuple[str, ...],
            run_number: int | None, **values) -> Row | None:
    """Change the job's row only while its status is one of `statuses` (and its run is
    `run_number`, when given): one conditional UPDATE, so two writers never both win
    (SQLite ignores row locks; the UPDATE also takes its write lock first). The job's row
    as changed (a plain row, not an entity: the workers call this on every run), or None
    when the condition did not hold."""
    statement = sql.job_update(tuple(statuses), run_number is not None, tuple(sorted(values)))
    return prepared.execute(db, statement, {
        "_id": job_id, "_run": run_number, "_now": utcnow(),
        **{f"set_{k}": v for k, v in values.items()}}).one_or_none()


def _claim_job(db: Session | Connection, job_id: str, run_number: int) -> Row | None:
    """The job's row, marked running with its `job.started` event if it was queued, or
    touched if a run resumed after a crash finds it running; None if it is neither."""
    return _start_queued(db, job_id, run_number) or set_job(db, job_id, ("running",),
                                                            run_number)


def _start_queued(db: Session | Connection, job_id: str, run_number: int) -> Row | None:
    """The job's row, marked running with its `job.started` event, if it was queued for
    run `run_number`; else None, changing nothing."""
    job = set_job(db, job_id, ("queued",), run_number, status="running",
                  started_at=utcnow(), finished_at=None)
    if job is not None:
        _job_event(db, job, "job.started")
    return job


def job_start(db: Session | Connection, job: Job | Row, source: Source | None = None
              ) -> dict:
    """What a run of `job` needs, fixed when it is enqueued: the pipeline, the source
    version (read, on a Session, unless given) and the outputs of the steps that already
    succeeded (a retried job goes on from where it failed)."""
    if source is None:
        source = Source.of(*db.execute(select(Image, ImageVersion).join(
            ImageVersion, ImageVersion.image_id == Image.id).where(
            Image.id == job.image_id, ImageVersion.number == job.version)).one())
    done = {} if job.run == 1 else dict(db.execute(select(
        JobStep.name, JobStep.output).where(JobStep.job_id == job.id,
                                            JobStep.state == "succeeded")).all())
    return {"definition": job.definition, "source": source.__dict__, "done": done}


def begin_attempt(db: Session | Connection, job_id: str, run_number: int, seq: int,
                  name: str, now: datetime, first: bool) -> dict | None:
    """Begin the run's attempt `seq`, of step `name`, with the job too if it is the run's
    `first` (see `_claim_job`): None once it began (see `begin_step`); else the outcome
    that stands for it: the one recorded if it ended before (a run replayed after a
    crash, see `recorded`), or STOPPED, beginning nothing, when the job no longer runs
    this run. A job found queued has recorded nothing of this run: no need to look."""
    if not (first and _start_queued(db, job_id, run_number) is not None):
        if (done := recorded(db, job_id, run_number, seq, name)) is not None:
            return done
        if set_job(db, job_id, ("running",), run_number) is None:
            return STOPPED
    begin_step(db, job_id, name, now)
    return None


def recorded(db: Session | Connection, job_id: str, run_number: int, seq: int,
             name: str) -> dict | None:
    """The outcome of the run's attempt `seq` (its place among the run's attempts) if that
    attempt ended (see `end_attempt`): a run replayed after a crash answers it again. The
    attempt must have been of step `name`: a replay that took another path is a bug."""
    row = db.execute(sql.RECORDED, {"_job": job_id, "_run": run_number, "_seq": seq}
                     ).one_or_none()
    if row is not None and row.step != name:
        raise RuntimeError(f"job {job_id} run {run_number}: attempt {seq} was of step "
                           f"{row.step!r}, the replay is at {name!r}")
    return None if row is None else row.outcome


class _EndedBefore(Exception):
    """Another execution of the run recorded the attempt first: roll back what this
    one wrote."""


def end_attempt(engine: Engine, job_id: str, run_number: int, seq: int, name: str,
                started: datetime, outcome: dict,
                writes: tuple | list[Callable[[Connection], bool]] = (),
                ending: Callable[[Connection], None] | None = None) -> tuple[dict, bool]:
    """End the run's attempt `seq` of step `name` with `outcome` (`{"ok": True, "output":
    ...}`, or `{"ok": False, "error": code, "message": ...}`) and record it, in one
    transaction (tried again as `run_steadily` does); a success also makes the step's
    `writes` (`StepContext.at_end`), and an outcome `finished` (the pipeline's last step
    succeeded) ends the job too. The outcome that stands, and whether the job ended here
    (see `finish_job`): `outcome`, unless a write was refused (the job stopped: an
    `image_gone` failure is recorded instead), the job is gone (an image deleted:
    STOPPED) or another execution of the run (a worker wrongly presumed dead) ended this
    attempt first: then its outcome, and nothing changes. `ending(db)` is called in the
    transaction that ends the job (so exactly when it answers True)."""
    try:
        return run_steadily(engine, lambda db: _end_attempt(
            db, job_id, run_number, seq, name, started, outcome, writes, ending))
    except _EndedBefore:  # (its job deleted since: STOPPED, as below)
        return run_steadily(engine, lambda db: recorded(
            db, job_id, run_number, seq, name) or STOPPED), False


def _end_attempt(db: Connection, job_id: str, run_number: int, seq: int, name: str,
                 started: datetime, outcome: dict,
                 writes: tuple | list[Callable[[Connection], bool]],
                 ending: Callable[[Connection], None] | None) -> tuple[dict, bool]:
    """`end_attempt`'s transaction. The job's row is written first, so two executions
    take turns; the attempt's record is inserted last, refused (`_EndedBefore`) if the
    other execution's is there."""
    now = utcnow()
    job = prepared.execute(db, sql.TOUCH_JOB, {"_id": job_id, "_now": now}).one_or_none()
    if job is None:
        return STOPPED, False
    running = job.status == "running" and job.run == run_number  # its row held: it stays so
    if outcome["ok"] and writes and not (running and all(write(db) for write in writes)):
        outcome = {"ok": False, "error": "image_gone", "message": f"job {job_id} stopped "
                   f"before step {name!r} ended: its image replaced or deleted, or the job "
                   "cancelled"}
    if outcome["ok"]:
        end_step(db, job_id, name, "succeeded", started, now, output=outcome["output"])
    else:
        end_step(db, job_id, name, "failed", started, now, error=error_text(outcome))
    if prepared.execute(db, sql.record_attempt(_dialect(db)), {
            "job_id": job_id, "run": run_number, "seq": seq, "step": name,
            "started_at": started, "finished_at": now, "outcome": outcome}).first() is None:
        raise _EndedBefore
    ended = bool(outcome.get("finished")) and finish_job(db, job_id, run_number, None)
    if ended and ending is not None:
        ending(db)
    return outcome, ended


def error_text(failure: dict) -> str:
    """How a step's or a run's failure (`{"error": code, "message": ...}`) reads in the
    catalog: `code: message`."""
    return f"{failure['error']}: {failure['message']}"


def finish_job(db: Session | Connection, job_id: str, run_number: int,
               error: dict | None) -> bool:
    """Mark the run succeeded (error None) or failed, with its event, if it is still
    running; whether it was (False: cancelled, retried, gone, or finished before)."""
    status = "failed" if error else "succeeded"
    job = set_job(db, job_id, ("running",), run_number, status=status,
                  error=error_text(error) if error else None,
                  finished_at=utcnow())
    if job is None:
        return False
    _job_event(db, job, f"job.{status}", error)
    return True


def finish_run(db: Session | Connection, job_id: str, run_number: int,
               error: dict | None) -> bool:
    """`finish_job`, first starting the job if no attempt of the run did (every step was
    done by earlier runs, or the run failed before its first attempt)."""
    _claim_job(db, job_id, run_number)
    return finish_job(db, job_id, run_number, error)


def failed_run(db: Session | Connection, job_id: str, run_number: int) -> bool:
    """Whether the job is failed, at run `run_number` (its last)."""
    return db.execute(select(Job.id).where(Job.id == job_id, Job.status == "failed",
                                           Job.run == run_number)).first() is not None


def still_running(db: Session | Connection, job_id: str, run_number: int) -> bool:
    """Whether the run may still write (its job is running this run), holding the write
    lock of the job's row until the transaction ends, so a cancel, replace or delete
    waits for the caller's writes or comes first."""
    return set_job(db, job_id, ("running",), run_number) is not None


def event_id(*parts: object) -> str:
    """An event id fixed by what the event is about, so writing it again is a no-op."""
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:32]


def _job_event(db: Session | Connection, job: Row, kind: str,
               error: dict | None = None) -> None:
    payload = {"job_id": job.id, "pipeline": job.pipeline, "image_id": job.image_id,
               "version": job.version, "run": job.run, "status": job.status}
    if error:
        payload["error"] = error
    add_event_once(db, kind, job.image_id, payload, event_id(job.id, job.run, kind))


def begin_step(db: Session | Connection, job_id: str, name: str, now: datetime) -> int:
    """Mark the step running; which attempt of it this is, counted over every run."""
    return prepared.execute(db, sql.BEGIN_STEP, {"_job": job_id, "_name": name,
                                                 "_now": now}).scalar_one()


def end_step(db: Session | Connection, job_id: str, name: str, state: str,
             started: datetime, now: datetime, output: dict | None = None,
             error: str | None = None) -> None:
    prepared.execute(db, sql.END_STEP, {
        "_job": job_id, "_name": name, "_state": state, "_now": now, "_output": output,
        "_error": error, "_ms": duration_ms(started, now)})


def duration_ms(started: datetime, finished: datetime) -> int:
    """How long a step or an attempt took, as the catalog keeps it."""
    return int((finished - started).total_seconds() * 1000)


def mark_step(db: Session | Connection, job_id: str, name: str, state: str) -> None:
    prepared.execute(db, sql.MARK_STEP, {"_job": job_id, "_name": name, "_state": state})


def add_renditions(db: Session | Connection, rows: list[dict]) -> bool:
    """Catalogue renditions of one version, for a run whose job's row the caller holds,
    found running (`end_attempt`: a replace, a delete or a cancel waits, or came first; so
    the version is there: versions go only with their image, which takes its jobs); one
    row per (version, plan) however often they are added. True: nothing refuses them."""
    now = utcnow()  # one statement for every row (compiled once, unlike a multi-VALUES)
    prepared.execute(db, sql.insert_new(_dialect(db), Rendition.__table__,
                                        ("version_id", "plan_hash")),
                     [{**row, "created_at": now} for row in rows])
    return True


def catalogued(db: Session | Connection, keys: set[str]) -> set[str]:
    """Those of `keys` that renditions of any version are catalogued at: what a stopped
    run must not delete."""
    return set(db.scalars(sql.CATALOGUED, {"_keys": sorted(keys)}))


def claim_copy(session: Session, job_id: str, run_number: int, key: str) -> bool:
    """Whether a copy may be written at `key` in this transaction: the run goes on (its
    job's row is held) and no image is there (the key is held, `repository.lock_key`), so
    that neither a stop nor an upload of the key comes between this answer and the write."""
    if not still_running(session, job_id, run_number):
        return False
    repository.lock_key(session, key)
    return session.scalars(select(Image.id).where(Image.key == key)).first() is None


def add_event_once(db: Session | Connection, kind: str, subject: str, payload: dict,
                   fixed_id: str) -> None:
    """Put the event `fixed_id` in the outbox unless an earlier attempt already did."""
    prepared.execute(db, sql.insert_new(_dialect(db), OutboxEvent.__table__, ("id",)),
                     {"id": fixed_id, "type": kind, "subject": subject, "payload": payload})


def _dialect(db: Session | Connection) -> str:
    """The name of the database's dialect (`sqlite`, `postgresql`)."""
    return (db.get_bind() if isinstance(db, Session) else db).dialect.name


def version_facts(session: Session, version_id: int) -> dict:
    version = session.get(ImageVersion, version_id)
    if version is None:
        raise NotFound(f"no image version {version_id}", "image_not_found")
    return {"width": version.width, "height": version.height, "format": version.format,
            "pages": version.pages, "bytes": version.bytes, "sha256": version.sha256,
            "exif": version.exif, "colours": version.colours, "blurhash": version.blurhash,
            "phash": version.phash}
