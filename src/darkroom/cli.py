"""The `darkroom` command: serve, worker, transform, sign, info, config show, migrate,
upload, images, pipelines, jobs."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Optional
from urllib.parse import parse_qsl, unquote, urlsplit

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from darkroom.cli_catalog import images_command, migrate_command, upload_command
from darkroom.cli_pipelines import jobs_app, pipelines_app, worker_command
from darkroom.config import Settings
from darkroom.errors import DarkroomError
from darkroom.pipelines import sealing

app = typer.Typer(help="darkroom: image processing service and tools.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
console = Console(stderr=True, soft_wrap=True)  # messages stay one line: paths, URLs


def _settings(catalog: bool = False, **overrides: object) -> Settings:
    """The settings; `catalog`: for a command that reads or writes pipeline definitions in
    the catalog itself (their secrets are sealed: `pipelines.sealing`)."""
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        if catalog:
            sealing.configure(settings)
    except ValueError as error:
        console.print(f"bad configuration: {error}", style="red", markup=False)
        raise typer.Exit(2) from None
    return settings


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to bind [default 127.0.0.1].")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port [default 8080].")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Data directory.")] = None,
) -> None:
    """Run the HTTP server (first run: adds a sample image and prints a URL to try)."""
    from darkroom.server.run import ensure_sample, serve as run_server

    settings = _settings(host=host, port=port, workers=workers, data_dir=data_dir)
    try:
        settings.require_safe_binding()
    except DarkroomError as error:
        console.print(error.message, style="red", markup=False)
        raise typer.Exit(2) from None
    sample = ensure_sample(settings)
    base = f"http://{settings.host}:{settings.port}"
    console.print(f"darkroom on {base}  (data in {settings.data_dir.resolve()})", markup=False)
    if sample:
        console.print(f"try: {base}/img/{sample}?w=400&fm=webp   docs: {base}/docs")
    run_server(settings)


@app.command()
def transform(
    files: Annotated[list[Path], typer.Argument(help="Images to transform.", exists=True,
                                                dir_okay=False)],
    query: Annotated[str, typer.Option("--query", "-q", help="Native URL parameters, "
                                       "e.g. 'w=800&fm=webp'.")] = "",
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("out"),
    jobs: Annotated[int, typer.Option(help="Files rendered at once.")] = 2,
) -> None:
    """Render local files with the same options as the URL grammar, with a progress bar."""
    from darkroom.engine import render
    from darkroom.engine.formats import EXTENSION
    from darkroom.grammars import native

    settings = _settings()
    plan = _plan_or_exit(native, query)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    claimed: set[Path] = set()
    lock = threading.Lock()

    def one(path: Path) -> str | None:
        try:
            result = render(plan, path.read_bytes(), settings.limits)
        except DarkroomError as error:
            return f"{path}: {error.code}: {error.message}"
        except OSError as error:
            return f"{path}: {error.strerror or error}"
        target = out / f"{path.stem}.{EXTENSION.get(result.format, result.format)}"
        with lock:  # two inputs named alike (a/x.jpg, b/x.jpg) must not overwrite each other
            if target in claimed:
                return f"{path}: {target} is already the output of another input"
            claimed.add(target)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            tmp.write_bytes(result.data)
            tmp.replace(target)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            return f"{path}: cannot write {target}: {error.strerror or error}"
        return None

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as progress, ThreadPoolExecutor(jobs) as pool:
        task = progress.add_task("transform", total=len(files))
        for problem in pool.map(one, files):
            progress.advance(task)
            if problem:
                failures += 1
                progress.console.print(problem, style="red", markup=False)
    console.print(f"{len(files) - failures} written to {out}, {failures} failed", markup=False)
    raise typer.Exit(1 if failures else 0)


def _plan_or_exit(native, query: str):
    try:
        return native.parse("local", parse_qsl(query, keep_blank_values=True))
    except DarkroomError as error:
        console.print(f"{error.code}: {error.message}", style="red", markup=False)
        raise typer.Exit(2) from None


@app.command()
def sign(
    url: Annotated[str, typer.Argument(help="Path and query, e.g. '/img/a.jpg?w=800'.")],
    expires_in: Annotated[Optional[int], typer.Option(help="Seconds the URL stays valid.")] = None,
    base: Annotated[str, typer.Option(help="Prefix, e.g. https://img.example.com.")] = "",
) -> None:
    """Print a signed URL, signed with the first configured key."""
    from darkroom.signing import sign_url

    settings = _settings()
    if not settings.signing_keys:
        console.print("[red]no signing key: set DARKROOM_SIGNING_KEYS[/red]")
        raise typer.Exit(2)
    parts = urlsplit(url)
    expires = int(time.time()) + expires_in if expires_in else None
    key = settings.signing_keys[0].get_secret_value()
    path = unquote(parts.path)  # the server verifies the decoded path
    typer.echo(base + sign_url(key, path, parse_qsl(parts.query, True), expires))


@app.command()
def info(files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Print each image's header (size, format, pages, alpha, ICC) as JSON lines."""
    from darkroom.engine import probe

    status = 0
    for path in files:
        try:
            header = probe(path.read_bytes())
            typer.echo(json.dumps({"file": str(path), **header.__dict__}))
        except DarkroomError as error:
            typer.echo(json.dumps({"file": str(path), "error": error.code,
                                   "message": error.message}))
            status = 1
    raise typer.Exit(status)


@app.command("secret-key")
def secret_key() -> None:
    """Print a new key for `secret_keys`, which seals the secrets of stored pipelines."""
    typer.echo(sealing.new_key())


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration (secrets masked)."""
    typer.echo(json.dumps(_settings().public_dict(), indent=2, default=str))


app.command("migrate")(migrate_command)
app.command("upload")(upload_command)
app.command("images")(images_command)
app.command("worker")(worker_command)
app.add_typer(pipelines_app, name="pipelines")
app.add_typer(jobs_app, name="jobs")
