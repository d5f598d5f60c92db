"""The hot statements run on SQLite's driver (`catalog.prepared`) write and return what
SQLAlchemy's own execution of them does; elsewhere they go through SQLAlchemy."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection, text
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from darkroom.catalog import make_engine, migrate, prepared, repository
from darkroom.catalog.models import Image, OutboxEvent, Rendition
from darkroom.pipelines import statements as sql

from .databases import pg_url  # noqa: F401

NOW = datetime(2026, 12, 7, 18, 0, 0, 123456, tzinfo=timezone.utc)
TABLES = ("images", "image_versions", "outbox", "jobs", "job_steps", "job_attempts",
          "renditions")
DEFAULTED = {"outbox": {"created_at", "next_attempt_at"}}  # the clock's, at execution


def _statements(run, db: Connection) -> list:
    """An upload's rows and its job's bookkeeping, through `run(db, statement, params)`;
    what each returned."""
    image = {"id": "i1", "key": "a.jpg", "status": "ready", "version": 1, "created_at": NOW,
             "updated_at": NOW}
    version = {"image_id": "i1", "number": 1, "sha256": "ab" * 32, "bytes": 10,
               "format": "jpeg", "width": 4, "height": 3, "pages": 1, "alpha": False,
               "orientation": 1, "icc": None, "exif": {"make": "X", "iso": 100},
               "colours": [{"hex": "#ffffff", "share": 1.0}], "blurhash": "L", "phash": "0",
               "storage_key": "a.jpg", "etag": "e", "created_at": NOW}
    job = {"id": "j1", "image_id": "i1", "version": 1, "pipeline": "p", "status": "queued",
           "trigger": "uploaded", "run": 1, "definition": {"name": "p", "steps": []},
           "created_at": NOW, "updated_at": NOW}
    steps = [{"job_id": "j1", "name": n, "position": i, "kind": "renditions",
              "state": "pending", "attempts": 0} for i, n in enumerate(("a", "b"))]
    answers = [run(db, repository._INSERT_IMAGE, image).rowcount,
               run(db, repository._INSERT_VERSION, version).scalar_one()]
    run(db, repository._INSERT_EVENT, {"id": "e1", "type": "image.uploaded",
                                       "subject": "i1", "payload": {"k": [1, 2]},
                                       "created_at": NOW, "attempts": 0,
                                       "next_attempt_at": NOW})
    run(db, sql.INSERT_JOB, job)
    run(db, sql.INSERT_STEP, steps)
    started = run(db, sql.job_update(("queued",), True, ("started_at", "status")), {
        "_id": "j1", "_run": 1, "_now": NOW, "set_status": "running", "set_started_at": NOW})
    answers.append(tuple(started.one_or_none()))
    answers.append(run(db, sql.BEGIN_STEP, {"_job": "j1", "_name": "a", "_now": NOW}
                       ).scalar_one())
    run(db, sql.END_STEP, {"_job": "j1", "_name": "a", "_state": "succeeded", "_now": NOW,
                           "_output": {"thumb": {"bytes": 3}}, "_error": None, "_ms": 12})
    answers.append(tuple(run(db, sql.TOUCH_JOB, {"_id": "j1", "_now": NOW}).one_or_none()))
    attempt = {"job_id": "j1", "run": 1, "seq": 0, "step": "a", "started_at": NOW,
               "finished_at": NOW, "outcome": {"ok": True}}
    answers.append(tuple(run(db, sql.record_attempt("sqlite"), attempt).first()))
    answers.append(run(db, sql.record_attempt("sqlite"), attempt).first())  # (skipped)
    run(db, sql.insert_new("sqlite", OutboxEvent.__table__, ("id",)),
        {"id": "e2", "type": "job.started", "subject": "i1", "payload": {"run": 1}})
    run(db, sql.insert_new("sqlite", Rendition.__table__, ("version_id", "plan_hash")), [
        {"version_id": answers[1], "name": n, "storage_key": f"_r/{n}", "plan_hash": n,
         "format": "webp", "bytes": 5, "width": 2, "height": 2, "created_at": NOW}
        for n in ("x", "y", "x")])
    answers.append(run(db, sql.job_update(("running",), True, ()), {
        "_id": "j1", "_run": 2, "_now": NOW}).one_or_none())  # (another run: no row)
    return answers


def _catalog(path: Path):
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    return engine


def _rows(db: Connection) -> dict[str, list]:
    found = {}
    for table in TABLES:
        rows = db.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2")).mappings()
        found[table] = [{k: v for k, v in row.items() if k not in DEFAULTED.get(table, ())}
                        for row in rows]
    return found


def _sqlalchemy(db: Connection, statement, params):
    return db.execute(statement, params)


def test_rows_and_answers_as_sqlalchemy_writes_them(tmp_path: Path) -> None:
    results = []
    for name, run in (("own", _sqlalchemy), ("prepared", prepared.execute)):
        engine = _catalog(tmp_path / f"{name}.sqlite")
        with engine.begin() as db:
            answers = _statements(run, db)
        with engine.connect() as db:
            results.append((answers, _rows(db)))
            defaults = db.execute(text("SELECT created_at, next_attempt_at, attempts FROM "
                                       "outbox WHERE id = 'e2'")).one()
        engine.dispose()
        assert defaults[0] is not None and defaults[1] is not None and defaults[2] == 0
    assert results[1] == results[0]
    answers, rows = results[1]
    assert answers[0] == 1 and answers[2][0] == "j1"
    assert answers[3] == 1 and answers[4] == ("running", 1) and answers[5] == (0,)
    assert answers[6] is None and answers[7] is None
    assert [r["name"] for r in rows["renditions"]] == ["x", "y"]
    assert json.loads(rows["job_steps"][0]["output"]) == {"thumb": {"bytes": 3}}


def test_returned_rows_by_name_and_type(tmp_path: Path) -> None:
    engine = _catalog(tmp_path / "c.sqlite")
    with engine.begin() as db:
        _statements(prepared.execute, db)
        row = prepared.execute(db, sql.job_update(("running",), True, ("status",)), {
            "_id": "j1", "_run": 1, "_now": NOW, "set_status": "succeeded"}).one_or_none()
    engine.dispose()
    assert (row.id, row.status, row.run, row.definition) == ("j1", "succeeded", 1,
                                                             {"name": "p", "steps": []})
    assert isinstance(row.started_at, datetime) and isinstance(row.updated_at, datetime)


def test_a_select_and_returning_read_as_sqlalchemy_s_rows(tmp_path: Path) -> None:
    """`run` (what DBOS's prepared statements use too) answers as a SQLAlchemy result does:
    `fetchone`, `scalar`, and rows by position, name and `_mapping`, for a SELECT as for
    RETURNING."""
    engine = _catalog(tmp_path / "c.sqlite")
    with engine.begin() as db:
        _statements(prepared.execute, db)
        select = sa.select(Image.id, Image.key, Image.created_at).where(Image.id == "i1")
        ours = _compiled_run(db, select)
        theirs = db.execute(select).fetchone()
        counted = _compiled_run(db, sa.select(sa.func.count()).select_from(Image))
        none = _compiled_run(db, sa.select(Image.id).where(Image.id == "none"))
        every = prepared.execute(db, sa.select(Image.key).order_by(Image.key), {}).all()
    engine.dispose()
    row = ours.fetchone()
    assert tuple(row) == tuple(theirs) and row._mapping == dict(theirs._mapping)
    assert (row.id, row.key) == ("i1", "a.jpg") and isinstance(row.created_at, datetime)
    assert ours.fetchone() is None
    assert counted.scalar() == 1 and none.scalar() is None and none.fetchone() is None
    assert [r.key for r in every] == ["a.jpg"]


def _compiled_run(db: Connection, statement) -> prepared.Rows:
    compiled = statement.compile(dialect=db.dialect)
    params = compiled.construct_params()
    return prepared.run(db, str(compiled), [params[k] for k in compiled.positiontup],
                        *prepared.rows_of(compiled, db.dialect))


def test_the_jobs_conditional_updates_are_compiled_once(tmp_path: Path) -> None:
    """A job's status condition (one status or several) is no expanded IN list, so each
    job update runs on the driver; the condition still holds."""
    engine = _catalog(tmp_path / "c.sqlite")
    with engine.begin() as db:
        _statements(prepared.execute, db)
        either = sql.job_update(("queued", "running"), False, ("status",))
        moved = prepared.execute(db, either, {"_id": "j1", "_run": None, "_now": NOW,
                                              "set_status": "failed"})
        again = prepared.execute(db, either, {"_id": "j1", "_run": None, "_now": NOW,
                                              "set_status": "running"})
    engine.dispose()
    assert isinstance(moved, prepared.Rows) and isinstance(again, prepared.Rows)
    assert moved.one_or_none().status == "failed" and again.one_or_none() is None


def test_a_refused_row_raises_as_sqlalchemy_does(tmp_path: Path) -> None:
    engine = _catalog(tmp_path / "c.sqlite")
    values = {"id": "i1", "key": "a.jpg", "status": "ready", "version": 1,
              "created_at": NOW, "updated_at": NOW}
    with engine.begin() as db:
        prepared.execute(db, repository._INSERT_IMAGE, values)
        with pytest.raises(IntegrityError, match="UNIQUE"):
            prepared.execute(db, repository._INSERT_IMAGE, {**values, "id": "i2"})
    engine.dispose()


def test_expanding_statements_and_postgresql_go_through_sqlalchemy(
        tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    engine = _catalog(tmp_path / "c.sqlite")
    with engine.begin() as db:
        found = prepared.execute(db, sql.CATALOGUED, {"_keys": ["_r/x"]})
        assert isinstance(found, CursorResult) and found.all() == []
    engine.dispose()
    engine = make_engine(pg_url)
    try:
        with engine.begin() as db:
            inserted = prepared.execute(db, repository._INSERT_IMAGE, {
                "id": "p1", "key": "p.jpg", "status": "ready", "version": 1,
                "created_at": NOW, "updated_at": NOW})
            assert isinstance(inserted, CursorResult)
            assert db.execute(text("DELETE FROM images WHERE id = 'p1'")).rowcount == 1
    finally:
        engine.dispose()


def test_a_sessions_pending_rows_are_flushed_first(tmp_path: Path) -> None:
    engine = _catalog(tmp_path / "c.sqlite")
    with Session(engine) as session, session.begin():
        session.add(Image(id="i1", key="a.jpg", status="ready", version=1))
        prepared.execute(session, repository._INSERT_EVENT, {  # (any statement will do)
            "id": "e1", "type": "image.uploaded", "subject": "i1", "payload": {},
            "created_at": NOW, "attempts": 0, "next_attempt_at": NOW})
        found = session.connection().execute(text("SELECT count(*) FROM images")).scalar()
    engine.dispose()
    assert found == 1
