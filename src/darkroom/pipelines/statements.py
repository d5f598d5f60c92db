"""The statements every job executes (its run, and the upload that makes it), built once
and executed with parameters.

Building a SQLAlchemy statement costs several times what running it on SQLite does
(measured: a job's conditional `UPDATE ... RETURNING`, 524 us when built per call against
103 us prebuilt with bound parameters), and a job executes about ten of them. In the
UPDATEs no parameter takes a column's name, which SQLAlchemy reserves for the SET clause;
the INSERTs take their values by column name.
"""

from __future__ import annotations

import functools

from sqlalchemy import Table, bindparam, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert, Update

from darkroom.catalog.models import Job, Rendition
from darkroom.catalog.pipeline_models import JobAttempt, JobStep

JOBS, STEPS, ATTEMPTS = Job.__table__, JobStep.__table__, JobAttempt.__table__
INSERT_JOB, INSERT_STEP = insert(JOBS), insert(STEPS)


@functools.lru_cache(maxsize=64)
def job_update(statuses: tuple[str, ...], by_run: bool, names: tuple[str, ...]) -> Update:
    """Set `updated_at` (`_now`) and each of `names` (`set_<name>`) on job `_id` while
    its status is in `statuses` (and its run is `_run`, if `by_run`); the row as changed.
    The statuses are compared one by one, not with IN: an IN list is expanded at every
    execution, which keeps the statement from being compiled once (`catalog.prepared`)."""
    if not statuses:
        raise ValueError("a job update needs the statuses it may change")
    condition = [JOBS.c.id == bindparam("_id"), or_(*(JOBS.c.status == s for s in statuses))]
    if by_run:
        condition.append(JOBS.c.run == bindparam("_run"))
    return (update(JOBS).where(*condition)
            .values(updated_at=bindparam("_now"), **{n: bindparam(f"set_{n}") for n in names})
            .returning(*JOBS.c))


_THE_STEP = (STEPS.c.job_id == bindparam("_job"), STEPS.c.name == bindparam("_name"))
BEGIN_STEP = (update(STEPS).where(*_THE_STEP)
              .values(state="running", attempts=STEPS.c.attempts + 1,
                      started_at=bindparam("_now"), finished_at=None, duration_ms=None,
                      error=None)
              .returning(STEPS.c.attempts))
END_STEP = (update(STEPS).where(*_THE_STEP)
            .values(state=bindparam("_state"), finished_at=bindparam("_now"),
                    output=bindparam("_output"), error=bindparam("_error"),
                    duration_ms=bindparam("_ms")))
MARK_STEP = update(STEPS).where(*_THE_STEP).values(state=bindparam("_state"))
TOUCH_JOB = (update(JOBS).where(JOBS.c.id == bindparam("_id"))
             .values(updated_at=bindparam("_now")).returning(JOBS.c.status, JOBS.c.run))
RECORDED = select(ATTEMPTS.c.step, ATTEMPTS.c.outcome).where(
    ATTEMPTS.c.job_id == bindparam("_job"), ATTEMPTS.c.run == bindparam("_run"),
    ATTEMPTS.c.seq == bindparam("_seq"))
CATALOGUED = select(Rendition.storage_key).where(
    Rendition.storage_key.in_(bindparam("_keys", expanding=True)))


@functools.lru_cache(maxsize=16)
def insert_new(dialect: str, table: Table, keys: tuple[str, ...]) -> Insert:
    """An INSERT into `table` that skips rows whose `keys` are taken (values come with
    the parameters), for the database named `dialect`."""
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing(index_elements=list(keys))


@functools.lru_cache(maxsize=2)
def record_attempt(dialect: str) -> Insert:
    """Insert an ended attempt's record unless one is there: its `seq` returned, or no row
    (RETURNING, as psycopg's row count of a skipped insert is -1)."""
    return insert_new(dialect, ATTEMPTS, ("job_id", "run", "seq")).returning(ATTEMPTS.c.seq)
