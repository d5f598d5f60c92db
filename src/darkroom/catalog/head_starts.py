"""An upload's head start: the rendition it makes for its pipelines from the decode that
gives its descriptors (`steps.head_start`), stored in the upload's transaction, and the
pre-renders of the other renditions its jobs' first steps will make, started on an
in-process worker's idle render threads right after the commit."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from darkroom.catalog.metadata import Facts
from darkroom.catalog.models import Image, ImageVersion, Job
from darkroom.catalog.transactions import Undo
from darkroom.config import Limits
from darkroom.engine.formats import MIME
from darkroom.engine.render import Rendered
from darkroom.pipelines import steps
from darkroom.pipelines.definition import Pipeline
from darkroom.pipelines.prerender import upcoming, works
from darkroom.plan.model import EditPlan
from darkroom.storage import Storage

log = structlog.get_logger("darkroom.catalog")
# Starts what it can of some renditions' works (key -> work), in memory, and takes the
# rendition an upload stored itself (key -> it); how many started.
Prerender = Callable[[dict[str, Callable[[], Rendered]], dict[str, Rendered]], int]


def key(image: Image, sha256: str, made: tuple[EditPlan, Rendered] | None,
        fired: list[tuple[Job, Pipeline]]) -> str | None:
    """Where the rendition an upload made goes: the key the first step of a job just
    fired looks at; None if no such step makes it (any more)."""
    if made is None or not any(made[0].recipe_hash == plan.recipe_hash for _, pipeline in fired
                               for plan in steps.first_renditions(pipeline)):
        return None
    return steps.rendition_key(image.id, sha256, made[0], made[1].format)


def store(storage: Storage, key: str, made: Rendered, undo: Undo) -> bool:
    """Store the rendition an upload made at `key`, in its transaction (`undo` deletes it
    again); best effort: a step that does not find it makes it. False if it could not be
    stored."""
    try:
        storage.blocking.put(key, made.data, MIME[made.format])
    except Exception as error:  # noqa: BLE001  (the upload stands without it)
        log.warning("head_start_not_stored", key=key, error=str(error))
        return False
    undo.append(lambda: storage.blocking.delete(key))
    return True


def prerender(start: Prerender, storage: Storage, limits: Limits, pipelines: list[Pipeline],
              version: ImageVersion, facts: Facts, stored: dict[str, Rendered]) -> None:
    """Have an idle in-process worker (`start`, its `Runtime.prerender`) start rendering
    what the first steps of the `pipelines` just fired will make of the `version`
    committed, and hand it the head start `stored`; best effort, like the head start."""
    if not pipelines:
        return
    try:
        plans = upcoming(pipelines, version.image_id, version.sha256, facts.header,
                         facts.made and facts.made[0])
        if plans or stored:
            start(works(storage, version.storage_key, (version.etag, version.sha256),
                        facts.header, limits, plans), stored)
    except Exception as error:  # noqa: BLE001  (the upload is committed: it stands)
        log.warning("prerender_not_started", key=version.storage_key, error=str(error))
