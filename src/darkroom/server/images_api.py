"""`/v1/images`: upload, list, read, replace and delete catalogued images."""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path
from typing import Annotated

import structlog
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response

from darkroom.catalog import idempotency
from darkroom.catalog.repository import MAX_LIMIT, ImageQuery
from darkroom.catalog.service import Catalog
from darkroom.engine.formats import MIME
from darkroom.errors import BadRequest
from darkroom.server.staging import sweep_parts
from darkroom.server.uploads import receive_upload
from darkroom.server.auth import Access
from darkroom.server.waiting import APPLIED, PREFER_DOC, JobWatch, WaitQuery, asked
from darkroom.storage import check_new_key

UPLOAD_DOC = """Upload an image. Send the bytes as the body (`Content-Type: image/*` or
`application/octet-stream`, with `?key=` and `?tags=a,b`), or `multipart/form-data` with a
`file` part and optional `key` and `tags` fields. The type is sniffed from the bytes. With
`Idempotency-Key`, a retry of the same request answers the first result (200,
`Idempotent-Replayed: true`); the same key with another body is 409. With `?wait=<s>` (or
`Prefer: wait=<s>`), the answer waits up to that many seconds for the pipelines the upload
started, and then lists their renditions."""
_BODY = {"requestBody": {"required": True, "content": {
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}, "key": {"type": "string"},
        "tags": {"type": "string"}}}}}}}
log = structlog.get_logger("darkroom.images")
_ID = PathParam(pattern=r"^[0-9a-f]{32}$", description="the image's id")
_REPLAYED = {"description": "the first answer to its `Idempotency-Key`, replayed", "content": {
    "application/json": {"schema": {"type": "object"}}}}


def images_router(catalog: Catalog, tmp_dir: Path, max_bytes: int,
                  access: Access, watch: JobWatch) -> APIRouter:
    """The catalog's routes; `access` checks their callers' keys (`auth`);
    `watch` serves the answers that wait for jobs (`waiting`). The uploads a process
    killed left in `tmp_dir` are removed first."""
    if swept := sweep_parts(tmp_dir):
        log.info("staged_uploads_swept", count=swept, folder=str(tmp_dir))
    router = APIRouter(prefix="/v1/images", tags=["catalog"])

    @router.post("", dependencies=[access.need("write")], status_code=201,
                 description=UPLOAD_DOC,
                 openapi_extra={**_BODY, **PREFER_DOC},
                 responses={201: APPLIED, 200: {**_REPLAYED, **APPLIED}})
    async def upload(request: Request, wait: WaitQuery = None) -> JSONResponse:
        waits = asked(wait, request)
        given = request.headers.get("idempotency-key")
        token = idempotency.check_key(given) if given is not None else None
        async with receive_upload(request, tmp_dir, max_bytes) as received:
            key = check_new_key(received.key) if received.key else None
            body, replayed = await catalog.upload(received.staged, key, received.tags, token)
        body, applied = await watch.settled(waits, body, lambda: catalog.get(body["id"]),
                                            written=True)
        headers = {"Location": f"/v1/images/{body['id']}", **applied}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(body, 200 if replayed else 201, headers)

    @router.get("", dependencies=[access.need("read")])
    async def list_images(
        prefix: Annotated[str, Query(max_length=1024)] = "",
        format: Annotated[str | None, Query(pattern=f"^({'|'.join(MIME)})$")] = None,
        status: Annotated[str | None, Query(max_length=16)] = None,
        tag: Annotated[str | None, Query(max_length=64)] = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        cursor: Annotated[str | None, Query(max_length=2048)] = None,
    ) -> dict:
        """Images in key order, filtered; `next_cursor` fetches the next page."""
        return await catalog.list(ImageQuery(prefix, format, status, tag, created_after,
                                             created_before, limit, cursor))

    @router.get("/{image_id}", dependencies=[access.need("read")], openapi_extra=PREFER_DOC,
                responses={200: APPLIED})
    async def get_image(image_id: Annotated[str, _ID], request: Request, response: Response,
                        wait: WaitQuery = None) -> dict:
        """Size, format, pages, EXIF subset, colours, BlurHash, pHash, renditions, jobs.
        With `?wait=<s>` (or `Prefer: wait=<s>`), up to that many seconds once the jobs
        of its current version have ended."""
        waits = asked(wait, request)
        read = functools.partial(catalog.get, image_id)
        body, applied = await watch.settled(waits, await read(), read)
        response.headers.update({"Vary": "Prefer", **applied})
        return body

    @router.put("/{image_id}", dependencies=[access.need("write")],
                openapi_extra={**_BODY, **PREFER_DOC},
                responses={200: APPLIED})
    async def replace(image_id: Annotated[str, _ID], request: Request, response: Response,
                      wait: WaitQuery = None) -> dict:
        """Upload new bytes for the image (its next version); derivatives start afresh.
        `?wait=<s>` as for an upload."""
        waits = asked(wait, request)
        read = functools.partial(catalog.get, image_id)
        await read()  # an unknown id is a 404 before the body is read
        async with receive_upload(request, tmp_dir, max_bytes) as received:
            if received.key or received.tags:
                raise BadRequest("a replacement keeps the key and tags", "bad_param")
            body = await catalog.replace(image_id, received.staged)
        body, applied = await watch.settled(waits, body, read, written=True)
        response.headers.update(applied)
        return body

    @router.delete("/{image_id}", dependencies=[access.need("write")], status_code=204)
    async def delete(image_id: Annotated[str, _ID]) -> Response:
        """Delete the original, its versions, derivatives and cached results."""
        await catalog.delete(image_id)
        return Response(status_code=204)

    return router

