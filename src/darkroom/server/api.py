"""The JSON API (`/v1/...`) and the operational endpoints, as a FastAPI app."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import multiprocess
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from darkroom import __version__
from darkroom.catalog.service import Catalog
from darkroom.config import Settings, is_loopback
from darkroom.engine import probe
from darkroom.engine.formats import MIME
from darkroom.errors import (
    BadRequest, DarkroomError, MethodNotAllowed, NotFound, TooLarge,
)
from darkroom.plan import EditPlan
from darkroom.server.errors import error_response, internal_error
from darkroom.server.images import accepted_formats
from darkroom.server.images_api import images_router
from darkroom.server.pipelines_api import pipelines_router
from darkroom.server import waiting
from darkroom.server.auth import Access
from darkroom.server.observability import log
from darkroom.server.renderer import Renderer
from darkroom.storage import check_key

TRANSFORM_DOC = """Render a plan. Send either `application/json` (an EditPlan whose `source.key`
names a stored image) or `multipart/form-data` with a `plan` field (JSON) and an `image`
file. Answers the image bytes."""


def build_api(settings: Settings, renderer: Renderer, catalog: Catalog | None = None,
              on_pipeline: Callable[[], Awaitable[None]] | None = None) -> FastAPI:
    """The FastAPI app for everything but `/img/` (which the dispatcher serves directly)."""
    api = FastAPI(title="darkroom", version=__version__, docs_url="/docs",
                  description="Image processing service: one EditPlan, one libvips engine.")
    access = Access(settings)
    if access.open and not is_loopback(settings.host):
        log.warning("api_open", host=settings.host, hint="set api_keys (or signing_keys): "
                    "anyone who reaches this address may upload, delete and define pipelines")
    limits = settings.limits

    @api.exception_handler(DarkroomError)
    async def _darkroom_error(request: Request, error: DarkroomError) -> Response:
        return error_response(error)

    @api.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 405:
            return error_response(MethodNotAllowed(str(error.detail)))
        if error.status_code == 400:  # e.g. a malformed multipart body, too many files
            return error_response(BadRequest(str(error.detail), "bad_request"))
        return error_response(NotFound(f"no route for {request.url.path}", "no_route"))

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(BadRequest(f"{where}: {first.get('msg')}", "bad_param"))

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        return internal_error()  # the middleware logs the traceback with the request id

    @api.get("/healthz", tags=["operations"])
    @api.head("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        """Alive: the process answers."""
        return {"status": "ok"}

    @api.get("/readyz", tags=["operations"])
    @api.head("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        """Ready: storage, the cache directory and the catalog database answer."""
        try:
            await renderer.storage.ping()
            if catalog is not None:
                await catalog.ping()
            if renderer.cache is not None:
                await renderer.cache.storage.ping()
        except DarkroomError as error:
            return JSONResponse({"status": "unavailable", "reason": error.message}, 503)
        return JSONResponse({"status": "ready"})

    @api.get("/metrics", tags=["operations"])
    async def metrics() -> Response:
        """Prometheus metrics (summed over worker processes)."""
        registry = None
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry) if registry else generate_latest()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @api.get("/v1/info/{key:path}", dependencies=[access.need("read")], tags=["images"])
    async def info(key: str) -> dict:
        """Width, height, format, pages, alpha, orientation, ICC and bytes, from the header."""
        data = await renderer.read(check_key(key), "source_not_found")
        header = await renderer.pool.run(probe, data, timeout=limits.time_budget_s)
        return {"key": key, **header.__dict__, "mime": MIME[header.format]}

    @api.post("/v1/transform", dependencies=[access.need("write")], tags=["images"],
              description=TRANSFORM_DOC,
              responses={200: {"content": {"image/*": {}}}})
    async def transform(request: Request) -> Response:
        declared = int(request.headers.get("content-length") or 0)
        if declared > limits.max_body_bytes:
            raise TooLarge(f"body over {limits.max_body_bytes} bytes", "body_too_large")
        plan, data = await _read_transform(_bounded(request, limits.max_body_bytes))
        accept = accepted_formats(request.headers.get("accept", ""))
        if data is None:
            if not plan.source.key:
                raise BadRequest("give source.key or upload an image", "bad_plan")
            data = await renderer.read(check_key(plan.source.key), "source_not_found")
        rendered = await renderer.run(plan, data, accept)
        headers = {"Cache-Control": "no-store", "X-Image-Width": str(rendered.width),
                   "X-Image-Height": str(rendered.height)}
        return Response(rendered.data, media_type=MIME[rendered.format], headers=headers)

    if catalog is not None:
        watch = waiting.JobWatch(lambda ids: catalog.transact(lambda s: waiting.ended(s, ids)))
        api.include_router(images_router(catalog, settings.data_dir / "tmp",
                                         limits.max_source_bytes, access, watch))
        if catalog.queue is not None and on_pipeline is not None:
            api.include_router(pipelines_router(catalog, catalog.queue, access,
                                                on_pipeline, watch))
    _declare_bearer(api, access)
    return api


def _declare_bearer(api: FastAPI, access: Access) -> None:
    """State in the OpenAPI spec which scope each `/v1/` operation needs (`x-scope`, from
    the route's `Access.need`), and, when keys are set, that it takes a bearer key."""
    build = api.openapi

    def openapi() -> dict:
        if api.openapi_schema is None:
            spec = build()
            scopes = {(route.path_format, method.lower()): dependency.dependency.scope
                      for route in _flat(api.routes)
                      for dependency in getattr(route, "dependencies", [])
                      if hasattr(dependency.dependency, "scope") for method in route.methods}
            if not access.open:
                spec.setdefault("components", {})["securitySchemes"] = {"bearer": {
                    "type": "http", "scheme": "bearer",
                    "description": "an API key of `api_keys` (else a signing key)"}}
            for path, operations in spec["paths"].items():
                for method, operation in operations.items() if path.startswith("/v1/") else ():
                    if (scope := scopes.get((path, method))) is None:
                        continue
                    operation["x-scope"] = scope
                    operation["description"] = (operation.get("description", "") +
                                                f"\n\nNeeds a key of scope `{scope}`.").strip()
                    if not access.open:
                        operation["security"] = [{"bearer": []}]
        return api.openapi_schema

    api.openapi = openapi


def _flat(routes: list) -> Iterator:
    """Every route, those of included routers too (FastAPI 0.165 keeps them nested)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from _flat(inner.routes) if inner is not None else (route,)


def _bounded(request: Request, max_bytes: int) -> Request:
    """The same request, whose body raises TooLarge past `max_bytes` (chunked ones too)."""
    receive, seen = request.receive, 0

    async def counted() -> dict:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > max_bytes:
            raise TooLarge(f"body over {max_bytes} bytes", "body_too_large")
        return message

    return Request(request.scope, counted)


async def _read_transform(request: Request) -> tuple[EditPlan, bytes | None]:
    kind = request.headers.get("content-type", "").lower()
    if kind.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("image")
        data = await upload.read() if upload is not None and hasattr(upload, "read") else None
        text = form.get("plan") or "{}"
    elif kind.startswith("application/json"):
        text, data = await request.body(), None
    else:
        raise BadRequest("send application/json or multipart/form-data", "bad_content_type")
    try:
        return EditPlan.model_validate_json(text), data
    except (ValidationError, ValueError) as error:
        raise BadRequest(f"bad plan: {_first_error(error)}", "bad_plan") from None


def _first_error(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(error).splitlines()[0]
