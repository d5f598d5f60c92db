"""The catalog database: an engine from `database_url`, and migrations run in code.

SQLite (the default) runs in WAL mode with a busy timeout and foreign keys on; PostgreSQL
goes through psycopg 3 (`postgresql://` URLs are read as `postgresql+psycopg://`).
"""

from __future__ import annotations

import fcntl
import time
from contextlib import contextmanager
from collections.abc import Callable, Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from darkroom.errors import CatalogError, DarkroomError

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_MS = 30_000
MMAP_BYTES = 256 * 1024 * 1024  # address space, not memory: the OS pages it in and out
# Enough pooled connections for every thread that writes (8 request threads, a worker's
# 32 runs, heartbeats, the outbox), so none waits on the pool or is opened and dropped
# per use (an overflow connection is closed when handed back; a new SQLite one costs its
# pragmas and a read of the schema: 0.10-0.12 an upload at 24). PostgreSQL keeps 24 (and
# as many more at most): its connections count against the server's `max_connections`.
# SQLite's pool hands out the connection handed back last: in WAL mode a connection drops
# its whole page cache when another connection committed since it last read, and the one
# that committed last is the likeliest to have seen every commit (an upload's first
# statement and a job's bookkeeping cost 10-30% less CPU than when the pool went round).
SQLITE_POOL_SIZE, POOL_SIZE = 48, 24
_PG_MIGRATION_LOCK = 0x6461726B  # "dark": one migrating process at a time
_PG_LOCK_POLL_S = 0.2


def make_engine(url: str) -> Engine:
    """An engine for `url`; raises DarkroomError(bad_config) for an unusable URL."""
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise DarkroomError(f"bad database_url: {error}", "bad_config") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000},
                               pool_size=SQLITE_POOL_SIZE, max_overflow=SQLITE_POOL_SIZE,
                               pool_use_lifo=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise DarkroomError(f"database_url must be sqlite or postgresql, not "
                            f"{parsed.get_backend_name()}", "bad_config")
    return create_engine(parsed, pool_pre_ping=True, pool_size=POOL_SIZE,
                         max_overflow=POOL_SIZE)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA case_sensitive_like=ON")  # prefixes match as on PostgreSQL
    cursor.execute("PRAGMA synchronous=NORMAL")
    # pages read through a mapping, not a pread each: in WAL mode a connection rereads
    # what another committed since, i.e. nearly every page of every transaction here (an
    # I/O error reading the file then stops the process, SIGBUS, rather than the query)
    cursor.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    cursor.close()


def migrate(engine: Engine, then: Callable[[], None] | None = None) -> None:
    """Bring the schema to the newest revision, then run `then` (another component's
    migrations in the same database) under the same lock; safe to run from many processes
    at once."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with migration_lock(engine):
        try:
            with engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except SQLAlchemyError as error:
            raise CatalogError(f"cannot migrate the catalog: {_first_line(error)}") from error
        if then is not None:
            then()


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """A file lock beside a SQLite database, an advisory lock on PostgreSQL: one process
    at a time changes the schema (server processes start together)."""
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        return
    # A session lock taken outside any transaction, by polling: CREATE INDEX CONCURRENTLY
    # (DBOS's migrations use it) waits for every snapshot older than itself, and a process
    # blocked inside pg_advisory_lock holds one until the lock is free: the holder and the
    # waiters would wait on each other for ever, unseen by the deadlock detector.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        while not connection.execute(text("SELECT pg_try_advisory_lock(:id)"),
                                     {"id": _PG_MIGRATION_LOCK}).scalar():
            time.sleep(_PG_LOCK_POLL_S)
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _PG_MIGRATION_LOCK})


def _first_line(error: Exception) -> str:
    return str(error).split("\n", 1)[0]
