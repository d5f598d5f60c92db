"""An upload's renditions started at once: what its jobs' first steps will make, rendered in
memory on the worker's free render threads, for those steps to store (see
`Runtime.prerender`). Without it, an upload's renditions wait for the queue's next poll
(0.25 s on average) while the render threads may sit idle."""

from __future__ import annotations

import hashlib

from darkroom.config import Limits
from darkroom.engine import Header, Rendered, choose_format, render
from darkroom.errors import DarkroomError
from darkroom.pipelines.definition import Pipeline
from darkroom.pipelines.steps import first_renditions, rendition_key
from darkroom.plan.model import EditPlan
from darkroom.storage import Storage


def upcoming(pipelines: list[Pipeline], image_id: str, sha256: str, header: Header,
             made: EditPlan | None) -> dict[str, EditPlan]:
    """The renditions (key -> plan) that the first steps of `pipelines` will make of a new
    version, but the one the upload made itself (`made`, its head start)."""
    plans = {}
    for pipeline in pipelines:
        for plan in first_renditions(pipeline):
            if made is not None and plan.recipe_hash == made.recipe_hash:
                continue
            fmt = choose_format(plan.output.format, header, frozenset(),
                                plan.output.opaque_png_as_jpeg)
            plans[rendition_key(image_id, sha256, plan, fmt)] = plan
    return plans


def render_upcoming(storage: Storage, source_key: str, sha256: str, header: Header,
                    limits: Limits, plans: dict[str, EditPlan]) -> dict[str, Rendered]:
    """`plans` (key -> plan) rendered from the stored source, if it still has `sha256`; a
    plan that fails is left out (its step renders it, and says why)."""
    data = storage.blocking.get(source_key)
    if hashlib.sha256(data).hexdigest() != sha256:  # replaced since: its jobs do the work
        return {}
    made = {}
    for key, plan in plans.items():
        try:
            made[key] = render(plan, data, limits, header=header)
        except DarkroomError:
            continue
    return made
