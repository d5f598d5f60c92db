"""Fixtures for the pipeline tests: a deployment (data dir + catalog database) that the
test process uploads into and `darkroom worker` processes run jobs from."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text

from darkroom.catalog import Catalog, Staged, make_engine
from darkroom.config import Settings
from darkroom.pipelines import admin, queue
from darkroom.pipelines.definition import parse
from darkroom.pipelines.store import run
from darkroom.server.pool import RenderPool
from darkroom.storage import open_storage

from catalog.databases import pg_database

DARKROOM = Path(sys.executable).with_name("darkroom")
FINISHED = ("succeeded", "failed", "cancelled")


@dataclass
class Deployment:
    """A data dir and a database shared by the test process and worker processes."""

    data_dir: Path
    database_url: str
    env: dict = field(default_factory=dict)
    workers: list = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir, database_url=self.database_url)

    def open_catalog(self) -> Catalog:
        settings = self.settings
        engine = make_engine(self.database_url)
        queue.migrate(engine)
        return Catalog(engine, open_storage(settings), RenderPool(2, 8), settings.limits,
                       queue=queue.JobQueue(self.database_url))

    def save_pipeline(self, definition: dict) -> None:
        catalog = self.open_catalog()
        try:
            run(catalog.engine, lambda s: admin.save_pipeline(s, parse(definition)))
        finally:
            catalog.pool.close()
            catalog.close()

    def upload(self, catalog: Catalog, path: Path, key: str) -> dict:
        import hashlib

        data = path.read_bytes()
        staged = Staged(path, hashlib.sha256(data).hexdigest(), len(data))
        body, _ = asyncio.run(catalog.upload(staged, key, []))
        return body

    def start_worker(self, executor_id: str, log: Path) -> subprocess.Popen:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1",
               "DARKROOM_DATA_DIR": str(self.data_dir),
               "DARKROOM_DATABASE_URL": self.database_url}
        with open(log, "ab") as out:
            process = subprocess.Popen([str(DARKROOM), "worker", "--id", executor_id],
                                       env=env, stdout=out, stderr=subprocess.STDOUT)
        self.workers.append(process)
        return process

    def stop_workers(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.workers.clear()

    def query(self, sql: str) -> list:
        engine = make_engine(self.database_url)
        try:
            with engine.connect() as connection:
                return list(connection.execute(text(sql)))
        finally:
            engine.dispose()

    def wait_jobs_finished(self, count: int, timeout_s: float = 120) -> list:
        """The jobs, once `count` of them exist and all are finished; fails on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            jobs = self.query("SELECT id, status, error FROM jobs")
            if len(jobs) >= count and all(j.status in FINISHED for j in jobs):
                return jobs
            time.sleep(0.2)
        pytest.fail(f"jobs not finished after {timeout_s} s: {jobs}")


def log_events(log: Path) -> list[dict]:
    """The JSON log lines a worker wrote (other lines skipped)."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


@pytest.fixture(params=["sqlite", "postgresql"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    """A deployment on each database; its workers are stopped at the end."""
    env = {"DARKROOM_PIPELINES__POLL_S": "0.05", "DARKROOM_PIPELINES__HEARTBEAT_S": "0.5",
           "DARKROOM_LOG_LEVEL": "info"}
    if request.param == "sqlite":
        deployment = Deployment(tmp_path / "data", f"sqlite:///{tmp_path / 'catalog.sqlite'}",
                                env)
        yield deployment
        deployment.stop_workers()
        return
    with pg_database("pipelines") as url:
        deployment = Deployment(tmp_path / "data", url, env)
        yield deployment
        deployment.stop_workers()
