"""`create_app(settings)`: the one place where backends are chosen and wired together."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from starlette.types import ASGIApp, Receive, Scope, Send

from darkroom.cache import ResultCache
from darkroom.catalog import retention
from darkroom.catalog.db import make_engine
from darkroom.catalog.service import Catalog
from darkroom.config import Settings
from darkroom.events.dispatcher import dispatching
from darkroom.pipelines import queue, sealing
from darkroom.pipelines.queue import JobQueue
from darkroom.pipelines.worker import InProcess, apply_file
from darkroom.server.api import build_api
from darkroom.server.images import ImageEndpoint
from darkroom.server.observability import ObservabilityMiddleware
from darkroom.server.pool import RenderPool
from darkroom.server.renderer import Renderer, cache_folder
from darkroom.server.sih import SihEndpoint
from darkroom.server.thumbor import ThumborEndpoint
from darkroom.storage import LocalStorage, open_storage


API_PREFIXES = ("/v1/",)
PIPELINE_CHECK_S = 3.0
API_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect",
                       "/redoc", "/openapi.json"})


class Dispatcher:
    """Sends `/img/` straight to the image endpoint (no framework routing on the hot
    path), the API's own paths to the FastAPI app, and the server root to the drop-in
    grammars: SIH's base64-JSON paths first (a segment of standard base64 may look like a
    Thumbor signature), then Thumbor when the first segment is `unsafe` or a signature,
    then SIH's other styles for any other root path."""

    def __init__(self, images: ImageEndpoint, api: ASGIApp,
                 thumbor: ThumborEndpoint | None = None, sih=None) -> None:
        self.images = images
        self.api = api
        self.thumbor = thumbor
        self.sih = sih

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith("/img/"):
            await self.images(scope, receive, send)
        elif path in API_PATHS or path.startswith(API_PREFIXES):
            await self.api(scope, receive, send)
        elif self.sih is not None and self.sih.claims(path):
            await self.sih(scope, receive, send)
        elif self.thumbor is not None and self.thumbor.claims(path):
            await self.thumbor(scope, receive, send)
        elif self.sih is not None and path != "/":
            await self.sih(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def create_app(settings: Settings | None = None, index: int = 0) -> ASGIApp:
    """Build the ASGI app for `settings` (defaults, darkroom.toml and env when None);
    `index` numbers the server processes (it names the in-process pipeline worker)."""
    settings = settings or Settings()
    storage = open_storage(settings)
    cache = None
    if settings.result_cache:
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        cache = ResultCache(LocalStorage(settings.cache_dir), settings.cache_max_bytes, "",
                            settings.cache_memory_bytes)
    pool = RenderPool(settings.threads, settings.queue_size)
    renderer = Renderer(storage, cache, pool, settings.limits)
    sealing.configure(settings)
    engine = make_engine(settings.database_url)
    queue.migrate(engine)
    apply_file(settings, engine)
    jobs = JobQueue(settings.database_url)
    workers = InProcess(settings, engine, index)

    async def invalidate(key: str) -> None:
        if cache is not None:
            await cache.delete_prefix(cache_folder(key) + "/")

    async def on_pipeline() -> None:
        await asyncio.to_thread(workers.start_if_needed)

    catalog = Catalog(engine, storage, pool, settings.limits, invalidate, jobs,
                      workers.prerender, settings.data_dir / "tmp")
    api = build_api(settings, renderer, catalog, on_pipeline)

    async def watch_for_pipelines() -> None:
        """Start this process's worker once a pipeline exists, wherever it was declared
        (another server process, the CLI): checked every few seconds until then."""
        while settings.pipelines.in_process and workers.worker is None:
            await on_pipeline()
            await asyncio.sleep(PIPELINE_CHECK_S)

    @asynccontextmanager
    async def lifespan(_app):
        await catalog.settle()  # before any upload of this process
        watcher = asyncio.create_task(watch_for_pipelines())
        try:
            async with retention.purging(engine, jobs, settings.retention, storage), \
                    dispatching(engine, settings.events):
                yield
        finally:
            watcher.cancel()
            await asyncio.to_thread(workers.stop)
            pool.close()
            catalog.close()

    api.router.lifespan_context = lifespan
    _document_images(api)
    thumbor = ThumborEndpoint(settings, renderer) if settings.thumbor.enabled else None
    sih = SihEndpoint(settings, renderer) if settings.sih.enabled else None
    app = Dispatcher(ImageEndpoint(settings, renderer), api, thumbor, sih)
    return ObservabilityMiddleware(app, access_log=settings.access_log)


def _document_images(api) -> None:
    """Add `/img/{key}` to the OpenAPI document (it is served outside FastAPI's router)."""
    from darkroom.server.openapi_images import IMAGE_PATH

    original = api.openapi

    def openapi() -> dict:
        schema = original()
        schema["paths"].setdefault("/img/{key}", IMAGE_PATH)
        return schema

    api.openapi = openapi
