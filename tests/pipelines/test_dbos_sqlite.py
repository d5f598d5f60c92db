"""DBOS's hot statements, compiled once on SQLite (`pipelines.dbos_sqlite`), write exactly
what DBOS's own path writes: a job's status and inputs at enqueue, its output at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from dbos import DBOSClient
from dbos._sys_db import SystemDatabase
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from darkroom.catalog import make_engine
from darkroom.pipelines import dbos_sqlite
from darkroom.pipelines.queue import APP_VERSION, QUEUE, WORKFLOW_NAME, dbos_url, migrate, \
    system_engine

T = TypeVar("T")
VOLATILE = {"created_at", "updated_at", "completed_at", "creator_xid", "owner_xid",
            "started_at_epoch_ms", "retention_timestamp"}
START = {"definition": {"name": "p", "steps": []}, "source": {"key": "a.jpg", "width": 7},
         "done": {"thumb": {"key": "_renditions/x.webp", "bytes": 12}}}


def _rows(db, table: str) -> list[dict]:
    rows = db.execute(text(f"SELECT * FROM {table} ORDER BY workflow_uuid")).mappings()
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]


@contextmanager
def _database(path: Path) -> Iterator[tuple[Engine, Engine, DBOSClient]]:
    """A fresh catalog database at `path`: its engine, DBOS's engine and a DBOS client."""
    url = f"sqlite:///{path}"
    catalog = make_engine(url)
    migrate(catalog)
    engine = system_engine(url)
    client = DBOSClient(system_database_url=dbos_url(url), lazy=True,
                        system_database_engine=engine)
    try:
        yield catalog, engine, client
    finally:
        client.destroy()
        engine.dispose()
        catalog.dispose()


def _enqueue(client: DBOSClient, db, workflow_id: str) -> None:
    client.enqueue_in_transaction(db, {
        "workflow_name": WORKFLOW_NAME, "queue_name": QUEUE, "workflow_id": workflow_id,
        "app_version": APP_VERSION}, "job-1", 1, START)


def _one_job(path: Path) -> tuple[dict, dict]:
    """Enqueue one job's workflow, claim it and record its outcome, in a fresh database at
    `path`; what DBOS's tables hold then, and the statements DBOS prepared."""
    with _database(path) as (_catalog, engine, client):
        with engine.begin() as db:
            _enqueue(client, db, "wf-1")
        with engine.begin() as db:  # claimed, as a worker's dequeue does
            db.execute(text("UPDATE workflow_status SET status = 'PENDING'"))
        system = client._sys_db
        assert system.update_workflow_outcome("wf-1", "SUCCESS", output='"succeeded"',
                                              owner_xid=None)
        with engine.connect() as db:
            tables = {t: _rows(db, t) for t in ("workflow_status", "workflow_input",
                                                "workflow_output")}
        return tables, dict(system._prepared_statements)


def test_prepared_statements_write_what_dbos_own_path_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (prepared_tables, prepared), (own_tables, own) = _both_paths(tmp_path, monkeypatch,
                                                                 _one_job)

    assert prepared_tables == own_tables
    assert prepared_tables["workflow_status"][0]["status"] == "SUCCESS"
    assert prepared_tables["workflow_input"][0]["inputs"]
    assert prepared_tables["workflow_output"][0]["output"] == '"succeeded"'
    assert _names(prepared) == {"insert_workflow_status", "insert_workflow_input",
                                "end_workflow", "upsert_workflow_output"}
    assert not own  # DBOS's own path prepares nothing on SQLite


def _both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                scenario: Callable[..., T], *args: object) -> tuple[T, T]:
    """What `scenario(path, *args)` gives on a fresh database with the statements
    prepared, then on another with DBOS's own path."""
    prepared = scenario(tmp_path / "prepared.sqlite", *args)
    _dbos_own_path(monkeypatch)
    return prepared, scenario(tmp_path / "own.sqlite", *args)


def _names(statements: dict) -> set[str]:
    """The names of the statements `dbos_sqlite` prepared (not left to DBOS's path)."""
    return {key[1] for key, value in statements.items()
            if key[0] == "sqlite" and value is not dbos_sqlite._UNPREPARED}


def _dbos_own_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dbos_sqlite, "install", lambda: None)
    _dbos_methods(monkeypatch)


def _dbos_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SystemDatabase, "_execute_prepared", dbos_sqlite._dbos_execute)
    monkeypatch.setattr(SystemDatabase, "_update_workflow_outcome_in_transaction",
                        dbos_sqlite._dbos_outcome)
    monkeypatch.setattr(SystemDatabase, "_latest_application_version",
                        dbos_sqlite._dbos_latest)


def _ended(path: Path, owner: str) -> tuple[bool, list[dict]]:
    """Whether an outcome written for the owner `owner` of a claimed workflow (claimed
    by "xid-1") landed, and what DBOS's tables hold then."""
    with _database(path) as (_catalog, engine, client):
        with engine.begin() as db:
            _enqueue(client, db, "wf-1")
        with engine.begin() as db:
            db.execute(text("UPDATE workflow_status SET status = 'PENDING', "
                            "owner_xid = 'xid-1', deduplication_id = 'd'"))
        landed = client._sys_db.update_workflow_outcome("wf-1", "ERROR", error="boom",
                                                        owner_xid=owner)
        with engine.connect() as db:
            return landed, [*_rows(db, "workflow_status"), *_rows(db, "workflow_output")]


@pytest.mark.parametrize("owner", ["xid-1", "xid-2"])
def test_an_outcome_lands_only_for_its_owner_as_on_dbos_own_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owner: str) -> None:
    prepared, own = _both_paths(tmp_path, monkeypatch, _ended, owner)

    assert prepared == own
    assert prepared[0] is (owner == "xid-1")
    status = prepared[1][0]
    assert status["status"] == ("ERROR" if owner == "xid-1" else "PENDING")
    assert (status["deduplication_id"] is None) is (owner == "xid-1")
    assert len(prepared[1]) == (2 if owner == "xid-1" else 1)  # no orphan output


def _latest(path: Path) -> tuple[list, dict]:
    """The newest version DBOS's queue sees, read after each of these registrations: none,
    its own, an unclaimed one, its own again made the latest, another application's; and
    the statements DBOS prepared."""
    seen = []
    with _database(path) as (_catalog, engine, client):
        system = client._sys_db

        def read() -> None:
            with system.engine.begin() as db:  # as DBOS's queue reads it
                row = system._latest_application_version(db, system.app_name)
                seen.append(None if row is None else row.version_name)
                seen.append(system._is_latest_version("v1", db))

        read()
        system.create_application_version("v1")
        read()
        system.create_application_version("v2", application_name="")
        with engine.begin() as db:  # unclaimed, and newer
            db.execute(text("UPDATE application_versions SET application_name = NULL, "
                            "version_timestamp = version_timestamp + 10 "
                            "WHERE version_name = 'v2'"))
        read()
        client.set_latest_application_version("v1")
        read()
        system.create_application_version("v3", application_name="other-app")
        read()
        return seen, dict(system._prepared_statements)


def test_the_latest_version_reads_as_on_dbos_own_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (prepared, statements), (own, none) = _both_paths(tmp_path, monkeypatch, _latest)

    assert prepared == own
    assert prepared[0::2] == [None, "v1", "v2", "v1", "v1"]
    assert _names(statements) == {"latest_application_version"} and not none


def test_install_is_idempotent() -> None:
    dbos_sqlite.install()
    dbos_sqlite.install()
    assert SystemDatabase._execute_prepared is dbos_sqlite._execute_prepared
    assert SystemDatabase._update_workflow_outcome_in_transaction is dbos_sqlite._outcome
    assert SystemDatabase._latest_application_version is dbos_sqlite._latest_version


def test_an_enqueue_in_the_catalogs_own_transaction_is_prepared(tmp_path: Path) -> None:
    """Uploads enqueue on the catalog's engine (another pysqlite dialect than DBOS's):
    the statements are prepared there too."""
    with _database(tmp_path / "catalog.sqlite") as (catalog, _engine, client):
        with Session(catalog) as session, session.begin():
            _enqueue(client, session, "wf-2")
        with catalog.connect() as db:
            assert [r["status"] for r in _rows(db, "workflow_status")] == ["ENQUEUED"]
            assert len(_rows(db, "workflow_input")) == 1
        assert _names(client._sys_db._prepared_statements) == {"insert_workflow_status",
                                                              "insert_workflow_input"}


def test_another_dbos_release_keeps_its_own_path(monkeypatch: pytest.MonkeyPatch) -> None:
    _dbos_methods(monkeypatch)
    monkeypatch.setattr(dbos_sqlite, "version", lambda _name: "3.5.0")
    dbos_sqlite.install()
    assert SystemDatabase._execute_prepared is dbos_sqlite._dbos_execute
    assert SystemDatabase._update_workflow_outcome_in_transaction is dbos_sqlite._dbos_outcome
    assert SystemDatabase._latest_application_version is dbos_sqlite._dbos_latest


def test_a_version_query_that_wants_more_of_its_connection_keeps_dbos_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DBOS method that does more with the connection than run its one statement is
    not prepared (the stand-in connection fails it): DBOS's own path answers, the same."""
    own = dbos_sqlite._dbos_latest

    def reads_dialect_first(self, c, application_name):
        assert c.dialect.name == "sqlite"
        return own(self, c, application_name)

    monkeypatch.setattr(dbos_sqlite, "_dbos_latest", reads_dialect_first)
    seen, prepared = _latest(tmp_path / "catalog.sqlite")

    assert seen[0::2] == [None, "v1", "v2", "v1", "v1"]
    assert "latest_application_version" not in _names(prepared)
