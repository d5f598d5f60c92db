"""`darkroom migrate | upload | images`: the catalog from the command line.

`upload` and `images` talk to a running server with `--server URL`, or else open the
configured storage and database directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from darkroom.config import Settings
from darkroom.errors import DarkroomError

SERVER_HELP = "Base URL of a running darkroom server; without it, use the local catalog."
_CHUNK = 1024 * 1024


def migrate_command() -> None:
    """Create or upgrade the catalog's tables (the server also does this at start)."""
    from darkroom.catalog import make_engine
    from darkroom.cli import _settings, console
    from darkroom.pipelines import queue

    settings = _settings()
    try:
        queue.migrate(make_engine(settings.database_url))
    except DarkroomError as error:
        console.print(f"{error.code}: {error.message}", style="red", markup=False)
        raise typer.Exit(1) from None
    console.print(f"catalog up to date: {settings.public_dict()['database_url']}", markup=False)


def upload_command(
    paths: Annotated[list[Path], typer.Argument(help="Image files to upload.", exists=True,
                                                dir_okay=False)],
    prefix: Annotated[str, typer.Option(help="Key prefix, e.g. 'photos/2026/'.")] = "",
    tag: Annotated[Optional[list[str]], typer.Option(help="A tag (repeat for more).")] = None,
    server: Annotated[Optional[str], typer.Option(help=SERVER_HELP)] = None,
) -> None:
    """Upload files to the catalog (key = prefix + file name), with a progress bar."""
    from darkroom.cli import _settings, console

    settings = _settings(catalog=server is None)
    tags = ",".join(tag or [])
    send, close = (_remote_sender(server, settings, tags) if server
                   else _local_sender(settings, tags))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    failures = 0
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("upload", total=len(paths))
            for path in paths:
                problem = send(f"{prefix}{path.name}", path)
                progress.advance(task)
                if problem:
                    failures += 1
                    progress.console.print(f"{path}: {problem}", style="red", markup=False)
    finally:
        close()
    console.print(f"{len(paths) - failures} uploaded, {failures} failed", markup=False)
    raise typer.Exit(1 if failures else 0)


def images_command(
    prefix: Annotated[str, typer.Option(help="Only keys starting with this.")] = "",
    format: Annotated[Optional[str], typer.Option("--format", help="jpeg, png, webp...")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Images per page.")] = 50,
    cursor: Annotated[Optional[str], typer.Option(help="Next page, as printed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, every field.")] = False,
    server: Annotated[Optional[str], typer.Option(help=SERVER_HELP)] = None,
) -> None:
    """List catalogued images (one page; the next cursor is printed when there is more)."""
    from darkroom.cli import _settings, console

    settings = _settings(catalog=server is None)
    query = {"prefix": prefix, "limit": limit, "format": format, "cursor": cursor}
    query = {k: v for k, v in query.items() if v}
    try:
        page = (_remote_list(server, settings, query) if server
                else _local_list(settings, query))
    except DarkroomError as error:
        console.print(f"{error.code}: {error.message}", style="red", markup=False)
        raise typer.Exit(1) from None
    except httpx.HTTPError as error:
        console.print(f"cannot list from {server}: {error}", style="red", markup=False)
        raise typer.Exit(1) from None
    print_page(page, as_json, lambda item: f"{item['id']}  {item['format']:<5} "
               f"{item['width']}x{item['height']}  {item['bytes']:>10}  {item['key']}")


def print_page(page: dict, as_json: bool, line: Callable[[dict], str]) -> None:
    """A page of items, as JSON lines or `line`s, then the next cursor on stderr."""
    from darkroom.cli import console

    for item in page["items"]:
        typer.echo(json.dumps(item) if as_json else line(item))
    if page["next_cursor"]:
        console.print(f"more: --cursor {page['next_cursor']}", markup=False)


def _headers(settings: Settings, need: str) -> dict:
    """The bearer token to send a server for what needs scope `need`: `api_token`, else
    the narrowest of `api_keys` that will do, else (without API keys) the first signing
    key; none if there is none."""
    from darkroom.server.auth import SCOPES

    if settings.api_token is not None:
        token = settings.api_token
    elif settings.api_keys:
        fits = [k for k in settings.api_keys if SCOPES.index(k.scope) >= SCOPES.index(need)]
        token = min(fits, key=lambda k: SCOPES.index(k.scope)).key if fits else None
    else:
        token = next(iter(settings.signing_keys), None)
    return {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}


def _remote_sender(server: str, settings: Settings, tags: str):
    client = httpx.Client(base_url=server.rstrip("/"), headers=_headers(settings, "write"),
                          timeout=120)

    def send(key: str, path: Path) -> str | None:
        params = {"key": key, **({"tags": tags} if tags else {})}
        try:
            # Same key, tags and bytes: the same Idempotency-Key, so a rerun after a lost
            # answer gets the first result instead of a 409.
            request = f"{key}\n{tags}\n{_file_sha256(path)}".encode()
            headers = {"Content-Type": "application/octet-stream",
                       "Idempotency-Key": "upload-" + hashlib.sha256(request).hexdigest()}
            with open(path, "rb") as body:  # httpx streams a file object in chunks
                response = client.post("/v1/images", params=params, content=body,
                                       headers=headers)
        except (OSError, httpx.HTTPError) as error:
            return str(error)
        if response.status_code in (200, 201):
            return None
        try:
            error = response.json()["error"]
            return f"{response.status_code} {error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            return f"HTTP {response.status_code}"

    return send, client.close


def _local_sender(settings: Settings, tags: str):
    catalog = _open_catalog(settings)

    def send(key: str, path: Path) -> str | None:
        from darkroom.catalog import Staged, parse_tags

        try:
            staged = Staged(path, _file_sha256(path), path.stat().st_size)
            asyncio.run(catalog.upload(staged, key, parse_tags([tags])))
        except DarkroomError as error:
            return f"{error.code}: {error.message}"
        except OSError as error:
            return str(error.strerror or error)
        return None

    def close() -> None:
        catalog.pool.close()
        catalog.close()

    return send, close


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _remote_list(server: str, settings: Settings, query: dict) -> dict:
    response = httpx.get(f"{server.rstrip('/')}/v1/images", params=query,
                         headers=_headers(settings, "read"), timeout=60)
    response.raise_for_status()
    return response.json()


def _local_list(settings: Settings, query: dict) -> dict:
    from darkroom.catalog import ImageQuery

    catalog = _open_catalog(settings)
    try:
        return asyncio.run(catalog.list(ImageQuery(**query)))
    finally:
        catalog.pool.close()
        catalog.close()


def _open_catalog(settings: Settings):
    from darkroom.catalog import Catalog, make_engine
    from darkroom.pipelines import queue
    from darkroom.server.pool import RenderPool
    from darkroom.storage import open_storage

    engine = make_engine(settings.database_url)
    queue.migrate(engine)
    return Catalog(engine, open_storage(settings), RenderPool(settings.threads, 0),
                   settings.limits, queue=queue.JobQueue(settings.database_url),
                   journal=settings.data_dir / "tmp")
