"""Renditions that a job ending without success leaves in storage, uncatalogued: an
upload's head start that the job's first step never took, or what a worker killed in the
middle of a step wrote. They are deleted in the transaction that stops the job (a cancel,
or the run's failure), unless the catalog lists them or another live job of the image will
make them: those are that job's to catalogue. The job's row is written first in that
transaction, and the other live jobs' rows are locked, so no run can take up a rendition
while it is being deleted (a retry, a step's end and a cancel all write those rows). On
PostgreSQL that lock may meet a replace or another stop of the same image's jobs locking
them in another order: the database then ends one of the two with a deadlock error, which
the API answers as a catalog error to try again, and a run's end retries itself.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import structlog
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from darkroom.catalog.models import ImageVersion, Job
from darkroom.errors import DarkroomError
from darkroom.pipelines import store
from darkroom.pipelines.definition import Pipeline, cached
from darkroom.pipelines.steps import RenditionsParams, rendition_format, rendition_key

log = structlog.get_logger("darkroom.pipelines")
LIVE = ("queued", "running")


def sweep(db: Session | Connection, job_id: str, delete: Callable[[str], None]) -> set[str]:
    """Delete the leftovers of job `job_id` (stopped in `db`'s transaction) with `delete`
    (a storage's blocking delete); the keys deleted. Best effort: one that storage fails
    to delete is logged and left (the job stops all the same)."""
    deleted = set()
    for key in sorted(leftovers(db, job_id)):
        try:
            delete(key)
        except DarkroomError as error:
            log.warning("leftover_not_deleted", job=job_id, key=key, error=error.message)
            continue
        deleted.add(key)
    return deleted


def leftovers(db: Session | Connection, job_id: str) -> set[str]:
    """The rendition keys that job `job_id`'s steps make of its version which no catalogued
    rendition holds and no other live job of the image makes (see the module)."""
    job = db.execute(select(Job.image_id, Job.version, Job.definition)
                     .where(Job.id == job_id)).one_or_none()
    if job is None:
        return set()
    mine = outputs(db, job.image_id, job.version, job.definition)
    return mine - held(db, job_id, job.image_id, mine)


def held(db: Session | Connection, job_id: str, image_id: str, keys: set[str]) -> set[str]:
    """Those of `keys` that a catalogued rendition holds, or that a live job of image
    `image_id` other than `job_id` makes (locking those jobs' rows)."""
    if not keys:
        return set()
    others = db.execute(select(Job.version, Job.definition).where(
        Job.image_id == image_id, Job.id != job_id, Job.status.in_(LIVE))
        .order_by(Job.id).with_for_update()).all()
    made = keys & set().union(*(outputs(db, image_id, o.version, o.definition)
                                for o in others))
    return made | store.catalogued(db, keys - made)


def outputs(db: Session | Connection, image_id: str, version: int, definition: dict
            ) -> set[str]:
    """Where the renditions steps of `definition` store what they make of `version` of
    image `image_id` (both formats a plan may choose, if the catalog does not know whether
    the version has alpha)."""
    plans = [plan for step in cached(Pipeline, definition).steps if step.type == "renditions"
             for plan in cached(RenditionsParams, step.params).plans.values()
             ] if definition else []
    if not plans:
        return set()
    row = db.execute(select(ImageVersion.sha256, ImageVersion.format, ImageVersion.pages,
                            ImageVersion.alpha).where(ImageVersion.image_id == image_id,
                                                      ImageVersion.number == version)
                     ).one_or_none()
    if row is None:
        return set()
    shapes = [SimpleNamespace(format=row.format, pages=row.pages, alpha=alpha)
              for alpha in ((row.alpha,) if row.alpha is not None else (False, True))]
    return {rendition_key(image_id, row.sha256, plan, rendition_format(plan, shape))
            for plan in plans for shape in shapes}
