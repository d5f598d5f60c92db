"""The catalog's databases for tests: a SQLite file, and PostgreSQL on the loopback.

PostgreSQL is required: when it cannot be reached the fixture fails the run, naming the
address, instead of skipping. Each xdist worker gets its own database, emptied after
every test and dropped at the end.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from darkroom.catalog import make_engine, migrate

PG_SERVER = os.environ.get("DARKROOM_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
TABLES = ("outbox_deliveries, outbox, idempotency_keys, job_steps, jobs, renditions, "
          "image_versions, image_tags, images, pipelines, workers")


@contextmanager
def pg_database(label: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for the duration; yields its URL."""
    name = f"darkroom_test_{label}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as error:
        admin.dispose()
        pytest.fail(f"PostgreSQL is required at {PG_SERVER} for the catalog tests and did "
                    f"not answer: {str(error).splitlines()[0]}", pytrace=False)
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """One migrated PostgreSQL database per xdist worker."""
    with pg_database(os.environ.get("PYTEST_XDIST_WORKER", "main")) as url:
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A catalog URL on each backend, of a database nothing has migrated yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sub' / 'catalog.sqlite'}"
    else:
        with pg_database("fresh") as url:
            yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A catalog URL on each backend; the PostgreSQL one is emptied after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.sqlite'}"
        return
    url = request.getfixturevalue("pg_url")
    yield url
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    engine.dispose()


@pytest.fixture
def catalog(database_url, tmp_path):
    """A catalog service on each backend, over local storage in `tmp_path / "storage"`,
    writing its uploads' intents in `tmp_path / "tmp"`."""
    from darkroom.catalog import Catalog
    from darkroom.config import Limits
    from darkroom.server.pool import RenderPool
    from darkroom.storage import LocalStorage

    engine = make_engine(database_url)
    migrate(engine)
    (tmp_path / "storage").mkdir()
    service = Catalog(engine, LocalStorage(tmp_path / "storage"), RenderPool(2, 8), Limits(),
                      journal=tmp_path / "tmp")
    yield service
    service.pool.close()
    service.close()


def staged(path: Path):
    """`path` as a received upload that the caller keeps (not moved into storage)."""
    from darkroom.catalog import Staged

    data = path.read_bytes()
    return Staged(path, hashlib.sha256(data).hexdigest(), len(data))


@pytest.fixture
def engine(database_url):
    """A migrated engine on each backend (see `database_url`)."""
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


def count_rows(url: str, table: str) -> int:
    """How many rows `table` holds."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
    finally:
        engine.dispose()


def rows(url: str, sql: str) -> list:
    """The rows a query returns."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql)))
    finally:
        engine.dispose()
