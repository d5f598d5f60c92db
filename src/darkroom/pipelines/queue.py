"""The jobs' queue: DBOS's system tables, in the catalog's own database.

A job's workflow is enqueued in the same transaction that creates or retries the job (and
that stores the upload), so an upload and its pipelines commit together or not at all;
a worker, in this process or another, dequeues it. The DBOS tables live in the same file
(SQLite) or database, schema `dbos` (PostgreSQL).
"""

from __future__ import annotations

from datetime import datetime

import structlog
from dbos import DBOS, DBOSClient
from pydantic import ValidationError
from sqlalchemy import Connection, Engine, Row, Text, cast, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from darkroom.catalog import prepared
from darkroom.catalog.db import make_engine
from darkroom.catalog.db import migrate as catalog_migrate
from darkroom.catalog.models import Image, ImageVersion, Job, workflow_id
from darkroom.catalog.pipeline_models import PipelineRow
from darkroom.engine.formats import MIME
from darkroom.engine.load import Header
from darkroom.pipelines import dbos_sqlite, steps, store
from darkroom.pipelines.context import Source
from darkroom.pipelines.definition import Pipeline, cached_text
from darkroom.plan.model import EditPlan

log = structlog.get_logger("darkroom.pipelines")
QUEUE = "darkroom-pipelines"
# DBOS runs and resumes only workflows of its own application version: this names the
# workflow's shape (its steps and their names), not darkroom's release, so an upgrade that
# keeps the shape still runs the jobs queued before it. Bump it only with the shape (2: a
# run gets its start as a third argument, and its first attempt starts the job; 3: the
# attempts are checkpointed in `job_attempts`, not as DBOS steps).
APP_VERSION = "darkroom-pipelines-3"
WORKFLOW_NAME = "darkroom.pipeline"
ENDED = ["SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"]  # DBOS's states
# the definitions as stored text: a definition read before is known by it, unparsed
_PIPELINES = select(PipelineRow.name, cast(PipelineRow.definition, Text).label("text")
                    ).order_by(PipelineRow.name)


def dbos_url(database_url: str) -> str:
    """The catalog's URL as DBOS wants it (plain `postgresql://`, or the SQLite file)."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def system_engine(database_url: str) -> Engine | None:
    """For SQLite, the catalog's own engine for the same file (WAL, busy timeout, foreign
    keys, `synchronous=NORMAL`: a commit survives a killed process without an fsync each,
    which writers would queue behind) with DBOS's IMMEDIATE transactions, and DBOS's hot
    statements compiled once (`dbos_sqlite`). None for PostgreSQL (DBOS makes its own)."""
    if make_url(database_url).get_backend_name() != "sqlite":
        return None
    dbos_sqlite.install()
    engine = make_engine(database_url)
    event.listen(engine, "connect", _immediate)
    return engine


def _immediate(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = "IMMEDIATE"  # as DBOS sets it on its own engines


def migrate(engine: Engine) -> None:
    """The catalog's tables, then DBOS's beside them, under the catalog's one migration
    lock (DBOS's own migrations do not expect company): what every process that opens the
    database runs first."""
    url = engine.url.render_as_string(hide_password=False)
    catalog_migrate(engine, then=lambda: DBOS.migrate(dbos_url(url)))


class JobQueue:
    """Enqueues and cancels job workflows from any process (no DBOS runtime needed)."""

    def __init__(self, database_url: str) -> None:
        self._engine = system_engine(database_url)
        self._client = DBOSClient(system_database_url=dbos_url(database_url), lazy=True,
                                  system_database_engine=self._engine)
        self.pipelines: list[Pipeline] | None = None  # as last read, for head starts

    def head_start(self, event: str, key: str, header: Header) -> EditPlan | None:
        """The rendition an upload of `key` may make itself (`steps.head_start`), by the
        pipelines as last read: `fire` then finds whether they still want it."""
        return steps.head_start(triggered(self.pipelines or [], event, key, header.format),
                                header)

    def enqueue(self, db: Session | Connection, job: Job | Row,
                source: Source | None = None) -> None:
        """Enqueue `job`'s current run (an entity, or a row of its table) inside `db`'s
        transaction, with what the run needs (`store.job_start`; `source` saves reading
        the version again, which needs a Session)."""
        self._client.enqueue_in_transaction(db, {
            "workflow_name": WORKFLOW_NAME, "queue_name": QUEUE,
            "workflow_id": workflow_id(job.id, job.run), "app_version": APP_VERSION,
        }, job.id, job.run, store.job_start(db, job, source))

    def cancel(self, workflow_id: str) -> None:
        self._client.cancel_workflow(workflow_id)

    def steps(self, workflow_id: str) -> list[dict]:
        return self._client.list_workflow_steps(workflow_id)

    def ended(self, before: datetime, limit: int, offset: int = 0) -> list[str]:
        """Up to `limit` ids (after the first `offset`) of job workflows that ended before
        `before`, oldest first."""
        return [w.workflow_id for w in self._client.list_workflows(
            name=WORKFLOW_NAME, status=ENDED, completed_before=before.isoformat(),
            limit=limit, offset=offset, load_input=False, load_output=False)]

    def forget(self, workflow_ids: list[str]) -> None:
        """Delete DBOS's records of these workflows (`catalog.retention`)."""
        self._client.delete_workflows(workflow_ids)

    def close(self) -> None:
        self._client.destroy()
        if self._engine is not None:
            self._engine.dispose()


def read_pipelines(db: Connection, queue: JobQueue) -> list[Pipeline]:
    """The pipelines defined, remembered by `queue` (for head starts); any this process
    cannot use (e.g. a step kind it does not know) are logged and left out. (On a
    session's connection, the session's pending rows wait for its next flush.)"""
    rows = prepared.execute(db, _PIPELINES, {}).all()
    pipelines = []
    for row in rows:
        try:
            pipelines.append(cached_text(Pipeline, row.text))
        except ValidationError as error:
            log.error("pipeline_unusable", pipeline=row.name,
                      error=str(error).splitlines()[0])
    queue.pipelines = pipelines
    return pipelines


def fire(db: Connection, queue: JobQueue, image: Image, version: ImageVersion,
         event: str) -> list[tuple[Job, Pipeline]]:
    """Make and enqueue a job for each enabled pipeline that `event` on `version` triggers
    (in the caller's transaction, so the change and its jobs commit together)."""
    fired = []
    for pipeline in triggered(read_pipelines(db, queue), event, image.key, version.format):
        job = store.new_job(db, pipeline, image, version, event)
        queue.enqueue(db, job, Source.of(image, version))
        fired.append((job, pipeline))
    return fired


def triggered(pipelines: list[Pipeline], event: str, key: str, fmt: str) -> list[Pipeline]:
    """The enabled pipelines among `pipelines` that `event` on an image at `key` of format
    `fmt` triggers."""
    content_type = MIME.get(fmt, "application/octet-stream")
    return [p for p in pipelines if p.enabled and p.trigger.fires(event, key, content_type)]
