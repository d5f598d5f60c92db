"""DBOS's hot statements compiled once on SQLite too.

DBOS 3.4 compiles its hot-path writes once (`SystemDatabase._execute_prepared`: a job's
status and inputs at enqueue, its output at the end) on PostgreSQL only. On SQLite it
builds, hashes and looks up each statement anew at every call, because pysqlite takes its
parameters by position and that path hands them over by name: about 0.5 ms of CPU a job,
half a percent of a render's. `install()` makes the SQLite path prepare them as well, with
the parameters in the compiled statement's order; any statement it cannot prepare so (a
list expanded at execution, say) keeps DBOS's own path. The SQL and each bound value are
what SQLAlchemy would send (the same compilation, the same bind processors). The enqueue
runs on the catalog's own connection (its transaction): any pysqlite connection will do.
It replaces a private method, so it is installed only over the DBOS release it was
written for (`FOR_DBOS`); another keeps DBOS's own path.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import structlog
from dbos._schemas import SCHEMA_PLACEHOLDER
from dbos._sys_db import SystemDatabase
from sqlalchemy.orm import Session

log = structlog.get_logger("darkroom.pipelines")
FOR_DBOS = "3.4.0"
_UNPREPARED = object()  # a statement DBOS's own path runs
_dbos_execute = SystemDatabase._execute_prepared


def install() -> None:
    """Prepare DBOS's hot statements on SQLite (idempotent); not over another DBOS."""
    if SystemDatabase._execute_prepared is _execute_prepared:
        return
    if (installed := version("dbos")) != FOR_DBOS:
        log.warning("dbos_statements_not_prepared", dbos=installed, written_for=FOR_DBOS)
        return
    SystemDatabase._execute_prepared = _execute_prepared


def _execute_prepared(self: SystemDatabase, conn: Any, name: str, values: dict[str, Any],
                      build: Any, *, insert_columns: bool = True) -> Any:
    connection = conn.connection() if isinstance(conn, Session) else conn
    if not self._is_sqlite or not _alike(connection.dialect, self.engine.dialect):
        return _dbos_execute(self, conn, name, values, build, insert_columns=insert_columns)
    key = ("sqlite", name, tuple(values))
    prepared = self._prepared_statements.get(key)
    if prepared is None:
        prepared = self._prepared_statements[key] = _prepare(
            self, connection.dialect, build(), values, insert_columns)
    if prepared is _UNPREPARED:
        return _dbos_execute(self, conn, name, values, build, insert_columns=insert_columns)
    sql, order, processors, constants = prepared
    merged = {**constants, **values}
    return connection.exec_driver_sql(sql, tuple(
        processors[k](merged[k]) if k in processors else merged[k] for k in order))


def _prepare(self: SystemDatabase, dialect: Any, statement: Any, values: dict[str, Any],
             insert_columns: bool) -> Any:
    """(SQL, parameter order, bind processors, the statement's own constants) for
    `dialect` (a connected one: it knows its default schema), or `_UNPREPARED` for a
    statement whose parameters are not plain positions."""
    compiled = statement.compile(dialect=dialect,
                                 column_keys=list(values) if insert_columns else None,
                                 schema_translate_map={SCHEMA_PLACEHOLDER: self.schema},
                                 render_schema_translate=True)
    if not compiled.positional or compiled.positiontup is None or compiled.insert_prefetch \
            or compiled.update_prefetch or any(bind.expanding or bind.literal_execute
                                               for bind in compiled.binds.values()):
        return _UNPREPARED  # parameters made or expanded at execution
    processors, constants = {}, {}
    for bind_name, bind in compiled.binds.items():
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            processors[bind_name] = processor
        if bind_name not in values:
            constants[bind_name] = bind.value
    return str(compiled), list(compiled.positiontup), processors, constants


def _alike(dialect: Any, own: Any) -> bool:
    """Whether SQL compiled for `own` runs as is on a connection of `dialect`."""
    return dialect is own or (type(dialect) is type(own)
                              and dialect.paramstyle == own.paramstyle)
