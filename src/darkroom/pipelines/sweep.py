"""Renditions that a job ending without success leaves in storage, uncatalogued: an
upload's head start that the job's first step never took, or what a worker killed in the
middle of a step wrote. The transaction that stops the job (a cancel, or the run's
failure) names them, `leftovers`: those of its rendition keys that no catalogued rendition
holds and no live job of the image makes (another job, or a newer run of the same one:
rendition keys are shared between pipelines with the same plan, and such a key is that
run's to catalogue). They are deleted after the commit, so that a rolled-back stop deletes
nothing, by `discard`: in a transaction of its own that first locks the image's row, asks
again what holds them, deletes the rest, and only then commits. Every transaction that
makes a job of the image live (an on-demand run, a retry, a replace) locks that row
first, so it either came before, and its job holds its keys, or waits for the deletes and
then finds the renditions gone and makes them again: a rendition is never catalogued by
one job while a sweep for another deletes it. An attempt that does not stand deletes what
it wrote by the same rule (`steps._unstore`). The lock is held while storage deletes (on
SQLite, the one write lock): slow storage then slows the image's writers (every writer,
on SQLite), only when a job stops with renditions left behind.

An upload stores its head start in its own transaction, so a job is never seen (and
stopped) before its head start is stored. A step that takes a head start from the
worker's memory still checks that it is stored (`steps.renditions`): a stop's sweep may
have deleted it before a retry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import SimpleNamespace

import structlog
from sqlalchemy import Connection, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from darkroom.catalog import repository
from darkroom.catalog.models import ImageVersion, Job
from darkroom.errors import DarkroomError
from darkroom.pipelines import store
from darkroom.pipelines.definition import cached
from darkroom.pipelines.steps import RenditionsParams, rendition_format, rendition_key

log = structlog.get_logger("darkroom.pipelines")
LIVE = ("queued", "running")


def leftovers(db: Session | Connection, job_id: str) -> set[str]:
    """The rendition keys that job `job_id`'s steps make of its version which no catalogued
    rendition holds and no other live job of the image makes (see the module)."""
    job = db.execute(select(Job.image_id, Job.version, Job.run, Job.definition)
                     .where(Job.id == job_id)).one_or_none()
    if job is None:
        return set()
    mine = outputs(db, job.image_id, job.version, job.definition)
    return mine - held(db, job_id, job.run, job.image_id, mine)


def held(db: Session | Connection, job_id: str, run: int, image_id: str, keys: set[str]
         ) -> set[str]:
    """Those of `keys` that a catalogued rendition holds, or that a live job of image
    `image_id` makes, other than run `run` of job `job_id` (a newer run of it counts)."""
    if not keys:
        return set()
    others = db.execute(select(Job.version, Job.definition).where(
        Job.image_id == image_id, Job.status.in_(LIVE),
        (Job.id != job_id) | (Job.run != run))).all()
    made = keys & set().union(*(outputs(db, image_id, o.version, o.definition)
                                for o in others))
    return made | store.catalogued(db, keys - made)


def sweep_left(transact: Callable[[Callable[[Session | Connection], set[str]]], set[str]],
               job_id: str, run: int, keys: set[str], delete: Callable[[str], None]
               ) -> set[str]:
    """`discard` in a transaction that `transact` runs and commits; the keys deleted. Best
    effort: a failure is logged (`leftovers_not_swept`) and leaves the keys to the image's
    next replace or delete, which sweep its whole rendition folder."""
    if not keys:
        return set()
    try:
        return transact(lambda db: discard(db, job_id, run, keys, delete))
    except (DarkroomError, SQLAlchemyError) as error:
        log.warning("leftovers_not_swept", job=job_id, keys=len(keys),
                    error=str(error).splitlines()[0])
        return set()


def discard(db: Session | Connection, job_id: str, run: int, keys: set[str],
            delete: Callable[[str], None]) -> set[str]:
    """Delete, in `db`'s transaction, those of `keys` (what run `run` of job `job_id` left:
    its `leftovers`, or what an attempt that does not stand wrote) that nothing `held`
    once the image's row is locked; the keys deleted. Commit only after it returns (see
    the module). None while that run is itself still live (another execution of it, or
    a later step, may catalogue them; its own end sweeps what it leaves); every key with
    the job gone (its image deleted)."""
    if not keys:
        return set()
    image_id = db.execute(select(Job.image_id).where(Job.id == job_id)).scalar()
    if image_id is not None:
        repository.lock_image(db, image_id)
        if db.execute(select(Job.id).where(Job.id == job_id, Job.run == run,
                                           Job.status.in_(LIVE))).first() is not None:
            return set()
        keys = keys - held(db, job_id, run, image_id, keys)
    return remove(keys, delete, job_id)


def remove(keys: Iterable[str], delete: Callable[[str], None], job_id: str) -> set[str]:
    """Delete `keys` with `delete` (a storage's blocking delete); the keys deleted. Best
    effort: a key storage fails to delete is logged (`leftover_not_deleted`) and left."""
    deleted = set()
    for key in sorted(keys):
        try:
            delete(key)
        except DarkroomError as error:
            log.warning("leftover_not_deleted", job=job_id, key=key, error=error.message)
            continue
        deleted.add(key)
    return deleted


def outputs(db: Session | Connection, image_id: str, version: int, definition: dict | None
            ) -> set[str]:
    """Where the renditions steps of `definition` store what they make of `version` of
    image `image_id` (both formats a plan may choose, if the catalog does not know whether
    the version has alpha)."""
    plans = [plan for step in (definition or {}).get("steps", [])
             if step.get("type") == "renditions"  # (read as stored: no secret opened)
             for plan in cached(RenditionsParams, step.get("params", {})).plans.values()]
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
