"""`/v1/pipelines` (declare, read, delete) and `/v1/jobs` (list, show, retry, cancel)."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response

from darkroom.catalog.service import Catalog
from darkroom.errors import BadRequest, TooLarge
from darkroom.pipelines import admin, registry, store, sweep
from darkroom.pipelines.definition import parse, read_yaml
from darkroom.pipelines.queue import JobQueue
from darkroom.server.auth import Access
from darkroom.server.waiting import APPLIED, PREFER_DOC, JobWatch, WaitQuery, asked

MAX_DEFINITION_BYTES = 256 * 1024
_NAME = PathParam(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
_JOB = PathParam(pattern=r"^[0-9a-f]{32}$")
_DEFINITION = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object"}},
    "application/yaml": {"schema": {"type": "string"}}}}}


def pipelines_router(catalog: Catalog, queue: JobQueue, access: Access,
                     on_pipeline: Callable[[], Awaitable[None]], watch: JobWatch) -> APIRouter:
    """The routes; `on_pipeline` is awaited after a pipeline is saved (starts a worker);
    `watch` serves the answers that wait for jobs (`waiting`)."""
    router = APIRouter(prefix="/v1", tags=["pipelines"])

    @router.get("/step-types", dependencies=[access.need("read")])
    async def step_types() -> dict:
        """The step kinds a pipeline may use, with their parameters' JSON schema."""
        return {"items": [{"type": k.name, "description": k.doc,
                           "params": k.params.model_json_schema()} for k in registry.kinds()]}

    @router.get("/pipelines", dependencies=[access.need("read")])
    async def list_pipelines() -> dict:
        return {"items": await catalog.transact(admin.list_pipelines)}

    @router.get("/pipelines/{name}", dependencies=[access.need("read")])
    async def get_pipeline(name: Annotated[str, _NAME]) -> dict:
        return await catalog.transact(lambda s: admin.get_pipeline(s, name))

    @router.put("/pipelines/{name}", dependencies=[access.need("admin")],
                openapi_extra=_DEFINITION)
    async def put_pipeline(name: Annotated[str, _NAME], request: Request) -> JSONResponse:
        """Create or replace the pipeline (JSON, or YAML as `application/yaml`). New uploads
        use it at once; runs already made keep the definition they started with."""
        pipeline = await _read_definition(request, name)
        body, created = await catalog.transact(lambda s: admin.save_pipeline(s, pipeline))
        queue.pipelines = None  # read again by the next upload, for its head start
        await on_pipeline()
        return JSONResponse(body, 201 if created else 200)

    @router.delete("/pipelines/{name}", dependencies=[access.need("admin")], status_code=204)
    async def delete_pipeline(name: Annotated[str, _NAME]) -> Response:
        await catalog.transact(lambda s: admin.delete_pipeline(s, name))
        queue.pipelines = None
        return Response(status_code=204)

    @router.post("/pipelines/{name}/runs", dependencies=[access.need("write")], status_code=202)
    async def run_pipeline(name: Annotated[str, _NAME],
                           image_id: Annotated[str, Query(pattern=r"^[0-9a-f]{32}$")]) -> dict:
        """Run the pipeline on an image's current version now, whatever its trigger says
        (backfills; a run again after the pipeline changed). Answers the queued job."""
        return await catalog.transact(lambda s: admin.run_pipeline(s, queue, name, image_id))

    @router.get("/jobs", dependencies=[access.need("read")])
    async def list_jobs(
        status: Annotated[str | None, Query(pattern=f"^({'|'.join(admin.STATUSES)})$")] = None,
        pipeline: Annotated[str | None, Query(max_length=64)] = None,
        image_id: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
        limit: Annotated[int, Query(ge=1, le=admin.MAX_LIMIT)] = 50,
        cursor: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
    ) -> dict:
        """Pipeline runs, newest first; `next_cursor` fetches the next page."""
        query = admin.JobQuery(status, pipeline, image_id, limit, cursor)
        return await catalog.transact(lambda s: admin.list_jobs(s, query))

    @router.get("/jobs/{job_id}", dependencies=[access.need("read")], openapi_extra=PREFER_DOC,
                responses={200: APPLIED})
    async def get_job(job_id: Annotated[str, _JOB], request: Request, response: Response,
                      wait: WaitQuery = None) -> dict:
        """The run and each step's state, attempts, duration, error and output. With
        `?wait=<s>` (or `Prefer: wait=<s>`), up to that many seconds once it has ended."""
        waits = asked(wait, request)
        read = functools.partial(catalog.transact, lambda s: admin.job_detail(s, job_id))
        body, applied = await watch.settled(waits, await read(), read)
        response.headers.update({"Vary": "Prefer", **applied})
        return body

    @router.post("/jobs/{job_id}/retry", dependencies=[access.need("write")], status_code=202)
    async def retry_job(job_id: Annotated[str, _JOB]) -> dict:
        """Run a failed or cancelled job again; the steps that succeeded are not re-run."""
        return await catalog.transact(lambda s: admin.retry_job(s, queue, job_id))

    @router.post("/jobs/{job_id}/cancel", dependencies=[access.need("write")], status_code=202)
    async def cancel_job(job_id: Annotated[str, _JOB]) -> dict:
        """Cancel a queued or running job; a step under way finishes, no further one starts,
        and the renditions it left uncatalogued are deleted."""
        body, workflow, left = await catalog.transact(lambda s: admin.cancel_job(s, job_id))
        await asyncio.to_thread(sweep.sweep_left, lambda work: store.run(catalog.engine, work),
                                job_id, body["run"], left, catalog.storage.blocking.delete)
        await asyncio.to_thread(queue.cancel, workflow)
        return body

    return router


async def _read_definition(request: Request, name: str):
    declared = int(request.headers.get("content-length") or 0)
    if declared > MAX_DEFINITION_BYTES:
        raise TooLarge(f"a pipeline definition is at most {MAX_DEFINITION_BYTES} bytes",
                       "body_too_large")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_DEFINITION_BYTES:
            raise TooLarge(f"a pipeline definition is at most {MAX_DEFINITION_BYTES} bytes",
                           "body_too_large")
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if kind in ("application/yaml", "application/x-yaml", "text/yaml"):
        data = read_yaml(raw.decode("utf-8", "replace"))
    else:
        try:
            data = json.loads(raw)
        except ValueError:
            raise BadRequest("the body is not JSON (send YAML as application/yaml)",
                             "bad_pipeline") from None
    if not isinstance(data, dict):
        raise BadRequest("a pipeline is one object (a mapping)", "bad_pipeline")
    data.setdefault("name", name)
    if data["name"] != name:
        raise BadRequest(f"the body names pipeline {data['name']!r}, the path {name!r}",
                         "bad_pipeline")
    return parse(data)
