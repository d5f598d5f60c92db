"""The catalog database: migrations on SQLite and PostgreSQL, engine settings."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from darkroom.catalog import make_engine, migrate
from darkroom.catalog.db import MIGRATIONS
from darkroom.catalog import pipeline_models  # noqa: F401  (its tables join Base's)
from darkroom.catalog.models import Base
from darkroom.errors import DarkroomError

from .databases import fresh_url  # noqa: F401

TABLES = {"images", "image_tags", "image_versions", "renditions", "jobs", "idempotency_keys",
          "outbox", "outbox_deliveries", "alembic_version", "pipelines", "job_steps",
          "job_attempts", "workers"}


def test_migrations_create_every_table_and_match_the_models(fresh_url):  # noqa: F811
    engine = make_engine(fresh_url)
    migrate(engine)
    migrate(engine)  # a second run changes nothing
    assert set(inspect(engine).get_table_names()) == TABLES
    with engine.connect() as connection:
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        assert version == "0005"
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


def test_the_last_migration_goes_down_and_up_keeping_every_row(fresh_url):  # noqa: F811
    """0005 adds a column to `image_versions`: going back drops it in place (a copy of the
    table would cascade into the renditions)."""
    engine = make_engine(fresh_url)
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO images (id, key, status, version, created_at, updated_at) "
            "VALUES ('i', 'a.jpg', 'ready', 1, '2026-01-01', '2026-01-01')"))
        connection.execute(text(
            "INSERT INTO image_versions (id, image_id, number, sha256, bytes, format, width, "
            "height, pages, alpha, exif, colours, blurhash, phash, storage_key, etag, "
            "created_at) VALUES (1, 'i', 1, 's', 1, 'jpeg', 1, 1, 1, false, '{}', '[]', '', "
            "'', 'a.jpg', 'e', '2026-01-01')"))
        connection.execute(text(
            "INSERT INTO renditions (version_id, plan_hash, name, storage_key, format, bytes, "
            "width, height, created_at) VALUES (1, 'h', 't', '_renditions/i/x.webp', 'webp', "
            "1, 1, 1, '2026-01-01')"))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    for step, revision in ((command.downgrade, "0004"), (command.upgrade, "head")):
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            step(config, revision)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM renditions")).scalar() == 1
        assert connection.execute(text("SELECT alpha FROM image_versions")).scalar() is None
    engine.dispose()


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'c.sqlite'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    engine.dispose()


def test_sqlite_hands_out_the_connection_handed_back_last(tmp_path):
    """Its page cache is the likeliest to be current (see `db.SQLITE_POOL_SIZE`)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'c.sqlite'}")
    for _ in range(3):
        a, b = engine.connect(), engine.connect()
        first, second = a.connection.driver_connection, b.connection.driver_connection
        b.close()
        a.close()  # handed back last
        with engine.connect() as again:
            assert again.connection.driver_connection is first is not second
    engine.dispose()


def test_postgresql_urls_use_psycopg_3():
    assert make_engine("postgresql://u@127.0.0.1/x").dialect.driver == "psycopg"


@pytest.mark.parametrize("url", ["nonsense", "mysql://u@h/db"])
def test_bad_database_urls_are_config_errors(url):
    with pytest.raises(DarkroomError) as err:
        make_engine(url)
    assert err.value.code == "bad_config"
