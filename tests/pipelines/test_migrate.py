"""Server processes starting together on a new database all migrate it, on both backends.

On PostgreSQL a waiter blocked in `pg_advisory_lock` held a snapshot that DBOS's `CREATE
INDEX CONCURRENTLY` waits for, while the holder waited for the index: every process hung."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import inspect

from darkroom.catalog import make_engine

from catalog.databases import fresh_url  # noqa: F401

MIGRATE = ("import sys; from darkroom.catalog import make_engine; "
           "from darkroom.pipelines import queue; queue.migrate(make_engine(sys.argv[1]))")


def test_processes_migrating_a_new_database_together_all_finish(fresh_url):  # noqa: F811
    processes = [subprocess.Popen([sys.executable, "-c", MIGRATE, fresh_url],
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        for process in processes:
            _, errors = process.communicate(timeout=120)
            assert process.returncode == 0, errors[-2000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    engine = make_engine(fresh_url)
    try:
        tables = set(inspect(engine).get_table_names())
        if engine.dialect.name == "postgresql":
            tables |= set(inspect(engine).get_table_names(schema="dbos"))
        assert {"images", "jobs", "workflow_status"} <= tables
    finally:
        engine.dispose()
