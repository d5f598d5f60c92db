"""The built-in step kinds: metadata, renditions, copy, notify, webhook and fail.

Every kind is idempotent. A rendition's key derives from the image, the source checksum
and the plan hash, and an object already there is reused, never written again; copies put
the same bytes at the same key; notify and webhook events have an id fixed by job, run and
step, so receivers drop a redelivery.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Callable
from concurrent.futures import wait
from functools import cached_property
from typing import Literal
from urllib.parse import parse_qsl

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from darkroom.engine import Rendered, choose_format, probe, render
from darkroom.engine.formats import EXTENSION, MIME
from darkroom.engine.geometry import load_scale
from darkroom.engine.load import Header, Shape
from darkroom.errors import BadRequest, Conflict, DarkroomError, NotFound
from darkroom.events.model import Event
from darkroom.events.settings import WebhookSink
from darkroom.events.webhook import WebhookNotifier
from darkroom.grammars import native
from darkroom.plan.model import EditPlan
from darkroom.pipelines import store
from darkroom.pipelines.definition import Pipeline, cached
from darkroom.pipelines.egress import check_public
from darkroom.pipelines.context import StepContext
from darkroom.pipelines.registry import register
from darkroom.pipelines.sealing import masked_url
from darkroom.storage import check_new_key, exists

log = structlog.get_logger("darkroom.pipelines")
RENDITIONS_PREFIX = "_renditions/"
# A head start's source as loaded (JPEGs shrink by powers of two, so up to 4x this).
HEAD_START_PIXELS = 1_000_000
_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(_Params):
    pass


@register("metadata", NoParams)
def metadata(ctx: StepContext, _params: NoParams) -> dict:
    """The facts catalogued from the version's bytes (size, format, EXIF, colours, hashes)."""
    return store.run(ctx.runtime.engine, lambda s: store.version_facts(s, ctx.source.version_id))


class RenditionsParams(_Params):
    renditions: dict[str, str] = Field(min_length=1, max_length=32,
                                       description="name -> native query, e.g. w=320&fm=webp")

    @field_validator("renditions")
    @classmethod
    def _compile(cls, value: dict[str, str]) -> dict[str, str]:
        plans = set()
        for name, query in value.items():
            if not re.match(_NAME, name):
                raise ValueError(f"bad rendition name {name!r}")
            try:
                plan = native.parse("x", parse_qsl(query, keep_blank_values=True))
            except BadRequest as error:
                raise ValueError(f"rendition {name!r}: {error.message}") from None
            if plan.recipe_hash in plans:
                raise ValueError(f"rendition {name!r} repeats another's plan")
            plans.add(plan.recipe_hash)
        return value

    @cached_property
    def plans(self) -> dict[str, EditPlan]:
        """Each rendition's plan, compiled once per definition (params are kept by
        `definition.cached`); the engine never reads a plan's source key."""
        return {name: native.parse("rendition", parse_qsl(query, keep_blank_values=True))
                for name, query in self.renditions.items()}


@register("renditions", RenditionsParams)
def renditions(ctx: StepContext, params: RenditionsParams) -> dict:
    """Render each named plan of the source in parallel; store each once; catalogue them
    in the transaction that ends the attempt (`StepContext.at_end`).

    Renditions an upload handed over (its head start, stored; its pre-renders, written
    from here) are taken first; then those already stored (by an earlier attempt) are
    looked up; each of the others is rendered and written (fsynced) by one task on the
    render threads, so the renders go on while others write. The source is read only for
    those, here, before they are queued, once one of the runtime's `sources` slots is free
    (so however many runs wait, few sources are in memory), and probed only if the catalog
    does not know its whole header."""
    source, runtime = ctx.source, ctx.runtime
    held = []

    @functools.cache
    def data() -> bytes:
        if not held:
            runtime.sources.acquire()
            held.append(True)
        return ctx.read_source()

    header = functools.cache(lambda: source.header() or probe(data()))
    try:
        return _renditions(ctx, params, data, header)
    finally:
        if held:
            runtime.sources.release()


def _renditions(ctx: StepContext, params: RenditionsParams, data: Callable[[], bytes],
                header: Callable[[], Header]) -> dict:
    source, runtime = ctx.source, ctx.runtime

    def make(plan: EditPlan, key: str, out: Rendered | None = None) -> dict:
        """Store the rendition (rendered now, unless an upload pre-rendered it)."""
        out = out or render(plan, data(), runtime.limits, header=header())
        runtime.put(key, out.data, MIME[out.format])
        log.info("rendition_written", key=key, job=ctx.job_id, bytes=len(out.data))
        return {**_facts(out), "written": True}

    made: dict[str, dict] = {}
    tasks, ready = {}, {}
    try:
        for name, plan in params.plans.items():
            fmt = rendition_format(plan, source if source.alpha is not None else header())
            key = rendition_key(source.image_id, source.sha256, plan, fmt)
            made[name] = {"key": key, "format": fmt, "plan_hash": plan.recipe_hash}
            out, stored = _prerendered(runtime, key)
            if stored and not exists(runtime.storage.blocking, key):
                stored = False  # deleted since its upload stored it (its job stopped): again
            if stored:
                made[name].update(_facts(out), written=False)
            elif out is not None:
                ready[name] = (plan, key, out)
            elif (found := _stored_rendition(runtime, key)) is not None:
                made[name].update(found)
            else:
                header(), data()  # read here, once, before the render threads need them
                tasks[name] = runtime.render(make, plan, key)
        for name, (plan, key, out) in ready.items():  # while the others render
            made[name].update(make(plan, key, out))
        for name, task in tasks.items():
            made[name].update(task.result())
    except BaseException:
        for task in tasks.values():
            task.cancel()  # those not started yet
        wait(tasks.values())  # none writes once the step has ended
        raise
    rows = [dict(version_id=source.version_id, name=name, storage_key=m["key"],
                 **{k: m[k] for k in ("plan_hash", "format", "bytes", "width", "height")})
            for name, m in made.items()]
    written = {m["key"] for m in made.values() if m["written"]}
    ctx.at_end(lambda c: store.add_renditions(c, rows),
               lambda: _unstore(ctx, written))
    return made


def _unstore(ctx: StepContext, written: set[str]) -> None:
    """Delete the renditions the step `written` when its attempt does not stand (its job
    stopped while it ran: a replace, a delete, a cancel), but those catalogued, by any
    version (a version replaced by the same bytes has the same keys), and those another
    live job of the image makes too (another pipeline with the same plan may have found
    them stored: they are its to catalogue); those the step only found stored are not its
    to delete."""
    if written:
        from darkroom.pipelines import sweep  # (which computes keys with this module)

        runtime = ctx.runtime
        sweep.sweep_left(lambda work: store.run_plain(runtime.engine, work), ctx.job_id,
                         ctx.run, written, runtime.storage.blocking.delete)


def rendition_format(plan: EditPlan, shape: Shape) -> str:
    """The format of `plan`'s rendition of a source of `shape` (its header, or a job's
    `Source` that knows its alpha; no client's Accept: one stored rendition serves every
    client)."""
    return choose_format(plan.output.format, shape, frozenset(),
                         plan.output.opaque_png_as_jpeg)


def rendition_key(image_id: str, sha256: str, plan: EditPlan, fmt: str) -> str:
    """Where a rendition of a source (by checksum) is stored: the same for every run."""
    return (f"{RENDITIONS_PREFIX}{image_id}/{sha256[:16]}-{plan.recipe_hash[:16]}."
            f"{EXTENSION.get(fmt, fmt)}")


def _prerendered(runtime, key: str) -> tuple[Rendered | None, bool]:
    """The rendition at `key` as an upload pre-rendered it (see `Runtime.prerender`),
    waited for if still rendering, and whether the upload stored it already; None if
    there is none or it failed (the step renders it)."""
    taken = runtime.prerendered(key)
    try:
        return (None, False) if taken is None else (
            taken[0].result(timeout=runtime.limits.time_budget_s), taken[1])
    except Exception:  # noqa: BLE001  (the step's own render reports the failure)
        return None, False


def _facts(out: Rendered) -> dict:
    return {"bytes": len(out.data), "width": out.width, "height": out.height}


def _stored_rendition(runtime, key: str) -> dict | None:
    """The facts of the rendition stored at `key`, or None if there is none."""
    try:
        found = probe(runtime.storage.blocking.get(key))
    except NotFound:
        return None
    return {"bytes": found.bytes, "width": found.width, "height": found.height,
            "written": False}


def first_renditions(pipeline: Pipeline) -> list[EditPlan]:
    """The plans of the pipeline's first step, if it makes renditions."""
    first = pipeline.steps[0]
    if first.type != "renditions":
        return []
    return list(cached(RenditionsParams, first.params).plans.values())


def head_start(pipelines: list[Pipeline], header: Header) -> EditPlan | None:
    """Of the renditions that the first steps of `pipelines` make, the one that loads a
    single-page raster source smallest, if that is small (`HEAD_START_PIXELS`, the memory
    an upload may hold): an upload makes it from the decode its descriptors need anyway,
    and the step finds it made. Only plans that stand the source upright qualify (the
    descriptors expect it so)."""
    if header.pages > 1 or header.format == "svg":
        return None
    swap = header.orientation >= 5
    scales = [(load_scale(header.width, header.height, plan.ops, swap), plan)
              for pipeline in pipelines for plan in first_renditions(pipeline)
              if plan.source.orient]
    scale, plan = min(scales, key=lambda pair: pair[0], default=(1.0, None))
    return plan if header.width * header.height * scale**2 <= HEAD_START_PIXELS else None


class CopyParams(_Params):
    prefix: str = Field(min_length=1, max_length=512, pattern=r"^[^_].*/$",
                        description="destination prefix, ending in '/'")
    renditions: bool = Field(False, description="also copy the renditions made so far")

    @field_validator("prefix")
    @classmethod
    def _safe(cls, value: str) -> str:
        try:
            check_new_key(value + "x")
        except BadRequest as error:
            raise ValueError(error.message) from None
        return value


@register("copy", CopyParams)
def copy(ctx: StepContext, params: CopyParams) -> dict:
    """Copy the source (and optionally its renditions) under another storage prefix; never
    over a catalogued image, and only while the job runs."""
    source = ctx.source
    target = params.prefix + source.key
    copies = {"source": (target, source.format, None)}
    if params.renditions:
        stem = posixpath.splitext(target)[0]
        for output in ctx.outputs.values():
            for name, made in output.items():
                if isinstance(made, dict) and str(made.get("key", "")).startswith(
                        RENDITIONS_PREFIX):
                    key = f"{stem}/{name}.{EXTENSION.get(made['format'], made['format'])}"
                    copies[name] = (key, made["format"], made["key"])
    data = ctx.read_source()
    for name, (key, fmt, origin) in copies.items():
        body = data if origin is None else ctx.runtime.storage.blocking.get(origin)

        def write(session) -> None:  # checked and written in one transaction
            if not store.claim_copy(session, ctx.job_id, ctx.run, key):
                raise Conflict(f"{key!r} is a catalogued image, or the job stopped: not "
                               "overwritten", "copy_refused")
            ctx.runtime.put(key, body, MIME[fmt])

        store.run(ctx.runtime.engine, write)
    return {name: key for name, (key, _fmt, _origin) in copies.items()}


def processed_event(ctx: StepContext) -> Event:
    """The `image.processed` event of this step, its id fixed by job, run and step."""
    source = ctx.source
    return Event(id=store.event_id(ctx.job_id, ctx.run, ctx.step), type="image.processed", subject=source.image_id, data={
        "job_id": ctx.job_id, "run": ctx.run, "pipeline": ctx.pipeline, "step": ctx.step,
        "image_id": source.image_id, "key": source.key, "version": source.version,
        "sha256": source.sha256, "outputs": ctx.outputs})


@register("notify", NoParams)
def notify(ctx: StepContext, _params: NoParams) -> dict:
    """Put an `image.processed` event with the outputs so far in the outbox (every sink)."""
    event = processed_event(ctx)
    store.run(ctx.runtime.engine, lambda s: store.add_event_once(
        s, event.type, event.subject, event.data, event.id))
    return {"event_id": event.id}


class WebhookParams(WebhookSink):
    type: Literal["webhook"] = "webhook"


@register("webhook", WebhookParams)
def webhook(ctx: StepContext, params: WebhookParams) -> dict:
    """POST the `image.processed` event to a URL now, signed like the events' webhooks
    (public addresses only, unless the host is in `pipelines.webhook_hosts`)."""
    check_public(params.url, ctx.runtime.settings.pipelines.webhook_hosts)
    event = processed_event(ctx)

    async def post() -> None:
        notifier = WebhookNotifier(params)
        try:
            await notifier.deliver(event)
        finally:
            await notifier.aclose()

    ctx.runtime.call(post())
    return {"event_id": event.id, "url": masked_url(params.url)}  # (its path may be a key)


class FailParams(_Params):
    error: str = Field("pipeline_failed", pattern=r"^[A-Za-z0-9_.]{1,64}$")
    cause: str = Field("", max_length=1024)


@register("fail", FailParams)
def fail(ctx: StepContext, params: FailParams) -> dict:
    """End the run as failed with `error` and `cause` (Step Functions' Fail state)."""
    cause = params.cause or (ctx.error or {}).get("message", "")
    raise DarkroomError(cause or params.error, params.error)
