"""`darkroom worker | pipelines ... | jobs ...`: pipelines from the command line.

These open the configured catalog database directly (the HTTP API under `/v1/pipelines`
and `/v1/jobs` does the same for remote callers).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer

from darkroom.cli_catalog import print_page
from darkroom.errors import DarkroomError

T = TypeVar("T")
POLL_S = 0.25  # how often `jobs show --wait` reads the job again
pipelines_app = typer.Typer(help="Declare and inspect pipelines.", no_args_is_help=True)
jobs_app = typer.Typer(help="List, show, retry and cancel pipeline runs.", no_args_is_help=True)


def _catalog(work: Callable, queue: bool = False, until: Callable[[T], bool] | None = None,
             wait_s: float = 0.0) -> T:
    """Run `work(session[, queue])` in one transaction on the migrated catalog; with
    `until`, again every `POLL_S` while `until(result)` is false, for up to `wait_s`."""
    from darkroom.catalog import make_engine
    from darkroom.cli import _settings, console
    from darkroom.pipelines import queue as queues
    from darkroom.pipelines.store import run

    settings = _settings(catalog=True)
    try:
        engine = make_engine(settings.database_url)
        queues.migrate(engine)
        jobs = queues.JobQueue(settings.database_url) if queue else None
        try:
            deadline, once = time.monotonic() + wait_s, (lambda s: work(s, jobs)) if queue else work
            result = run(engine, once)
            while until is not None and not until(result) and time.monotonic() < deadline:
                time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
                result = run(engine, once)
            return result
        finally:
            if jobs is not None:
                jobs.close()
            engine.dispose()
    except DarkroomError as error:
        console.print(f"{error.code}: {error.message}", style="red", markup=False)
        raise typer.Exit(1) from None


def _echo(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def worker_command(
    executor_id: Annotated[Optional[str], typer.Option(
        "--id", help="Executor id, stable across restarts [default: <host>-worker]. Give "
        "each worker on a host its own.")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="Runs at once.")] = None,
    metrics_port: Annotated[Optional[int], typer.Option(
        help="Serve Prometheus metrics on 127.0.0.1 at this port.")] = None,
) -> None:
    """Run pipeline jobs, and deliver events to the configured sinks, until SIGINT/SIGTERM
    (no HTTP server)."""
    from darkroom.cli import _settings, console
    from darkroom.catalog import make_engine
    from darkroom.pipelines import queue
    from darkroom.pipelines.worker import Worker, apply_file, default_executor_id
    from darkroom.server.observability import configure_logging

    settings = _settings(catalog=True)
    if concurrency is not None:
        settings.pipelines.concurrency = concurrency
    configure_logging(settings.log_level)
    engine = make_engine(settings.database_url)
    try:
        queue.migrate(engine)
        apply_file(settings, engine)
    except DarkroomError as error:
        console.print(f"{error.code}: {error.message}", style="red", markup=False)
        raise typer.Exit(1) from None
    worker = Worker(settings, executor_id or default_executor_id("worker"), engine,
                    dispatch=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1")
    try:
        worker.start()
    except DarkroomError as error:
        console.print(f"{error.code}: {error.message}", style="red", markup=False)
        raise typer.Exit(1) from None
    stop.wait()
    worker.stop()


@pipelines_app.command("apply")
def pipelines_apply(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                                         help="YAML with `pipelines:`.")]):
    """Create or replace the pipelines a YAML file declares."""
    from darkroom.pipelines import admin
    from darkroom.pipelines.definition import load_yaml

    try:
        pipelines = load_yaml(file.read_text())
    except DarkroomError as error:
        typer.echo(f"{error.code}: {error.message}", err=True)
        raise typer.Exit(1) from None
    for body, created in _catalog(lambda s: [admin.save_pipeline(s, p) for p in pipelines]):
        typer.echo(f"{'created' if created else 'updated'} {body['name']}")


@pipelines_app.command("list")
def pipelines_list() -> None:
    """Every pipeline: name, trigger, steps."""
    from darkroom.pipelines import admin

    for p in _catalog(admin.list_pipelines):
        steps = " -> ".join(s["name"] for s in p["steps"])
        typer.echo(f"{p['name']}  {'on ' if p['enabled'] else 'off'}  "
                   f"prefix={p['trigger']['prefix']!r}  {steps}")


@pipelines_app.command("show")
def pipelines_show(name: str) -> None:
    """One pipeline's definition as JSON (secrets masked)."""
    from darkroom.pipelines import admin

    _echo(_catalog(lambda s: admin.get_pipeline(s, name)))


@pipelines_app.command("delete")
def pipelines_delete(name: str) -> None:
    """Delete a pipeline (runs already made go on)."""
    from darkroom.pipelines import admin

    _catalog(lambda s: admin.delete_pipeline(s, name))
    typer.echo(f"deleted {name}")


@jobs_app.command("list")
def jobs_list(
    status: Annotated[Optional[str], typer.Option(help="queued, running, succeeded, failed, "
                                                  "cancelled")] = None,
    pipeline: Annotated[Optional[str], typer.Option()] = None,
    image: Annotated[Optional[str], typer.Option(help="An image id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 50,
    cursor: Annotated[Optional[str], typer.Option(help="Next page, as printed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, every field.")] = False,
) -> None:
    """Pipeline runs, newest first."""
    from darkroom.pipelines import admin

    query = admin.JobQuery(status, pipeline, image, limit, cursor)
    page = _catalog(lambda s: admin.list_jobs(s, query))
    print_page(page, as_json, lambda job: f"{job['id']}  {job['status']:<9} run {job['run']}  "
               f"{job['pipeline']}  image {job['image_id']} v{job['version']}  "
               f"{job['error'] or ''}")


@jobs_app.command("show")
def jobs_show(
    job_id: str,
    wait: Annotated[float, typer.Option(min=0, max=86400, help=(
        "First wait up to this many seconds for the job to end (succeeded, failed or "
        "cancelled); it is shown as it stands then."))] = 0.0,
) -> None:
    """A job with each step's state, attempts, duration, error and output, and the
    history of its attempts, as JSON."""
    from darkroom.pipelines import admin

    _echo(_catalog(lambda s: admin.job_detail(s, job_id),
                   until=lambda job: job["status"] in admin.ENDED, wait_s=wait))


@jobs_app.command("retry")
def jobs_retry(job_id: str) -> None:
    """Run a failed or cancelled job again (steps that succeeded are kept)."""
    from darkroom.pipelines import admin

    job = _catalog(lambda s, q: admin.retry_job(s, q, job_id), queue=True)
    typer.echo(f"queued {job['id']} run {job['run']}")


@jobs_app.command("cancel")
def jobs_cancel(job_id: str) -> None:
    """Cancel a queued or running job."""
    from darkroom.catalog import make_engine
    from darkroom.cli import _settings, console
    from darkroom.pipelines import admin, store, sweep
    from darkroom.pipelines.queue import JobQueue
    from darkroom.storage import open_storage

    body, workflow, left = _catalog(lambda s: admin.cancel_job(s, job_id))
    settings = _settings(catalog=True)
    queue, engine = JobQueue(settings.database_url), make_engine(settings.database_url)
    try:  # the row says cancelled: what it left goes (best effort), then DBOS is told
        delete = open_storage(settings).blocking.delete
        sweep.sweep_left(lambda work: store.run(engine, work), job_id, body["run"], left,
                         delete)
    except DarkroomError as error:
        console.print(f"{job_id} cancelled; its leftover renditions were not deleted: "
                      f"{error.code}: {error.message}", style="yellow", markup=False)
    finally:
        engine.dispose()
        try:
            queue.cancel(workflow)
        finally:
            queue.close()
    typer.echo(f"cancelled {job_id}")
