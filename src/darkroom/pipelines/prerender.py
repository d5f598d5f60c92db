"""An upload's renditions started at once: what its jobs' first steps will make, rendered in
memory on the worker's free render threads, for those steps to store (see
`Runtime.prerender`). Without it, an upload's renditions wait for the queue's next poll
(0.25 s on average) while the render threads may sit idle."""

from __future__ import annotations

import functools
from collections.abc import Callable

from darkroom.config import Limits
from darkroom.engine import Header, Rendered, render
from darkroom.pipelines.definition import Pipeline
from darkroom.pipelines.steps import first_renditions, rendition_format, rendition_key
from darkroom.plan.model import EditPlan


def upcoming(pipelines: list[Pipeline], image_id: str, sha256: str, header: Header,
             made: EditPlan | None) -> dict[str, EditPlan]:
    """The renditions (key -> plan) that the first steps of `pipelines` will make of a new
    version, but the one the upload made itself (`made`, its head start)."""
    plans = {}
    for pipeline in pipelines:
        for plan in first_renditions(pipeline):
            if made is not None and plan.recipe_hash == made.recipe_hash:
                continue
            plans[rendition_key(image_id, sha256, plan, rendition_format(plan, header))] = plan
    return plans


def works(data: bytes, header: Header, limits: Limits, plans: dict[str, EditPlan]
          ) -> dict[str, Callable[[], Rendered]]:
    """For each of `plans` (key -> plan), the work that renders it from `data`: the
    upload's own bytes, so a version replaced since in storage is still rendered right
    for its own jobs."""
    return {key: functools.partial(render, plan, data, limits, header=header)
            for key, plan in plans.items()}
