"""The catalog database: migrations on SQLite and PostgreSQL, engine settings."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from darkroom.catalog import make_engine, migrate
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


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'c.sqlite'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    engine.dispose()


def test_postgresql_urls_use_psycopg_3():
    assert make_engine("postgresql://u@127.0.0.1/x").dialect.driver == "psycopg"


@pytest.mark.parametrize("url", ["nonsense", "mysql://u@h/db"])
def test_bad_database_urls_are_config_errors(url):
    with pytest.raises(DarkroomError) as err:
        make_engine(url)
    assert err.value.code == "bad_config"
