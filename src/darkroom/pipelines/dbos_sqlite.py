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

Two more statements that DBOS builds at every call on SQLite are prepared the same way:
the job's status at its end (`_outcome`: DBOS's PostgreSQL path does it in one prepared
statement, its SQLite path builds an UPDATE), and the newest application version, read
at every poll of the queue (`_latest_version`: a union of two probes, of constants only).

A job's last transaction also records its workflow's success (`Success`): it runs on the
catalog's connection, to the very file DBOS keeps its tables in, so DBOS's own write of
the same outcome, a transaction of its own when the workflow returns, is skipped.

It replaces private methods, so it is installed only over the DBOS release it was
written for (`FOR_DBOS`); another keeps DBOS's own path.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from importlib.metadata import version
from typing import Any

import sqlalchemy as sa
import structlog
from dbos import DBOS
from dbos._context import current_owner_xid
from dbos._dbos import _get_dbos_instance
from dbos._schemas import SCHEMA_PLACEHOLDER
from dbos._serialization import serialize_value_as
from dbos._sys_db import SystemDatabase, WorkflowStatusString
from sqlalchemy.orm import Session

from darkroom.catalog.prepared import binds, positional, rows_of, run

log = structlog.get_logger("darkroom.pipelines")
FOR_DBOS = "3.4.0"
_UNPREPARED = object()  # a statement DBOS's own path runs
_NOT_OURS = object()  # an outcome not written: not this execution's to write
_dbos_execute = SystemDatabase._execute_prepared
_dbos_outcome = SystemDatabase._update_workflow_outcome_in_transaction
_dbos_latest = SystemDatabase._latest_application_version
# workflow -> (owner, status, output) that `Success` wrote, until DBOS goes to write it
# (the oldest forgotten past ENDED_KEPT: DBOS then finds it written and reads it back, as
# for any outcome it could not write itself)
_ended: OrderedDict[str, tuple[str | None, str, str | None]] = OrderedDict()
ENDED_KEPT = 4096


def install() -> None:
    """Prepare DBOS's hot statements on SQLite (idempotent); not over another DBOS."""
    if SystemDatabase._execute_prepared is _execute_prepared:
        return
    if (installed := version("dbos")) != FOR_DBOS:
        log.warning("dbos_statements_not_prepared", dbos=installed, written_for=FOR_DBOS)
        return
    SystemDatabase._execute_prepared = _execute_prepared
    SystemDatabase._update_workflow_outcome_in_transaction = _outcome
    SystemDatabase._latest_application_version = _latest_version


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
    sql, order, processors, constants, row, results = prepared
    return run(connection, sql, positional(order, processors, {**constants, **values}),
               row, results)


def _outcome(self: SystemDatabase, workflow_id: str, status: str, *, output: str | None,
             error: str | None, owner_xid: str | None) -> bool:
    """DBOS's `update_workflow_outcome` on SQLite (two statements, one transaction) with
    its UPDATE prepared: a PENDING workflow (still owned by `owner_xid`, if given) takes
    `status`, then its output is upserted; False, writing nothing, if it was not so. The
    outcome its job's last transaction wrote already (`Success`) is not written again."""
    if not self._is_sqlite:
        return _dbos_outcome(self, workflow_id, status, output=output, error=error,
                             owner_xid=owner_xid)
    if _ended.pop(workflow_id, None) == (owner_xid, status, output):
        return True
    with self.engine.begin() as db:
        return _write_outcome(self, db, workflow_id, status, output, error, owner_xid) \
            is not _NOT_OURS


def _write_outcome(self: SystemDatabase, db: Any, workflow_id: str, status: str,
                   output: Any, error: str | None, owner_xid: str | None,
                   serialize: bool = False) -> Any:
    """In `db`'s transaction, end the PENDING workflow (still owned by `owner_xid`, if
    given) with `status` and upsert its output (serialized as the workflow's inputs were,
    if `serialize`); the output written, or `_NOT_OURS`, writing nothing, if it was not
    so."""
    keys = self._wf_values(workflow_id)  # (refuses a shard key here, as DBOS's `_wf` does)
    values = {"wf_id": workflow_id, "new_status": status}
    if owner_xid is not None:
        values["owner"] = owner_xid

    def build() -> Any:
        table, now_ms = self.tables.workflow_status, self._now_ms_sql()
        update = sa.update(table).values(
            status=sa.bindparam("new_status", type_=table.c.status.type),
            deduplication_id=None, owner_xid=None, updated_at=now_ms, completed_at=now_ms,
        ).where(*self._wf(table, sa.bindparam("wf_id", type_=table.c.workflow_uuid.type)),
                table.c.status == WorkflowStatusString.PENDING.value)
        if owner_xid is not None:
            update = update.where(table.c.owner_xid == sa.bindparam(
                "owner", type_=table.c.owner_xid.type))
        return update.returning(table.c.serialization)

    name = "end_workflow" + ("" if owner_xid is None else "_owned")
    ended = self._execute_prepared(db, name, values, build, insert_columns=False).first()
    if ended is None:
        return _NOT_OURS  # no orphan output either
    if serialize:
        output, _ = serialize_value_as(output, ended[0], _get_dbos_instance()._serializer)
    self._execute_prepared(db, "upsert_workflow_output", {
        **keys, "workflow_uuid": workflow_id, "output": output, "error": error},
        lambda: _output_upsert(self))
    return output


class Success:
    """The running workflow's success, written by `write` in the transaction that ends its
    job; once that committed, `settle` has DBOS skip its own write of the same outcome, by
    the same owner. (The row says the workflow ended a moment before its function returns:
    all that is left of it then is logging.)"""

    def __init__(self, system: SystemDatabase, workflow_id: str, output: Any) -> None:
        self.system, self.workflow_id, self.output = system, workflow_id, output
        self.owner = current_owner_xid(workflow_id)
        self.written: Any = _NOT_OURS

    @classmethod
    def of(cls, engine: sa.Engine, output: Any) -> Success | None:
        """For the workflow running on this thread, returning `output`, whose job's rows
        `engine` writes; None unless that engine's file holds DBOS's tables (SQLite) and
        DBOS's outcome runs through `_outcome`."""
        workflow_id = DBOS.workflow_id
        if workflow_id is None or SystemDatabase._update_workflow_outcome_in_transaction \
                is not _outcome:
            return None
        system = _get_dbos_instance()._sys_db
        if not (system._is_sqlite and _same_file(engine, system.engine)):
            return None
        return cls(system, workflow_id, output)

    def write(self, db: sa.Connection) -> None:
        """In `db`'s transaction (again on each try of it), inside a savepoint (the
        driver's: SQLAlchemy's costs more than the two writes): if it fails, the job
        still ends and DBOS writes the outcome itself."""
        self.written = _NOT_OURS
        run(db, "SAVEPOINT workflow_outcome", ())  # (after the job's writes: inside them)
        try:
            self.written = _write_outcome(
                self.system, db, self.workflow_id, WorkflowStatusString.SUCCESS.value,
                self.output, None, self.owner, serialize=True)
        except Exception as error:  # noqa: BLE001  (an optimisation: DBOS's own path stays)
            self.written = _NOT_OURS
            if not db.connection.driver_connection.in_transaction:
                raise  # SQLite ended the whole transaction (a full disk, say): tried again
            run(db, "ROLLBACK TO workflow_outcome", ())
            log.warning("workflow_outcome_left_to_dbos", workflow=self.workflow_id,
                        error=f"{type(error).__name__}: {error}")
        run(db, "RELEASE workflow_outcome", ())

    def settle(self) -> None:
        """Once the transaction that wrote it committed."""
        if self.written is not _NOT_OURS:
            _ended[self.workflow_id] = (self.owner, WorkflowStatusString.SUCCESS.value,
                                        self.written)
            while len(_ended) > ENDED_KEPT:
                try:
                    _ended.popitem(last=False)
                except KeyError:  # emptied by another thread meanwhile
                    break


def _same_file(one: sa.Engine, other: sa.Engine) -> bool:
    return one.dialect.name == other.dialect.name == "sqlite" and _same_path(
        one.url.database or "", other.url.database or "")


@functools.lru_cache(maxsize=16)
def _same_path(one: str, other: str) -> bool:
    """Whether two SQLite database paths name one file (resolved once a pair: each job's
    end asks)."""
    return one not in ("", ":memory:") and os.path.realpath(one) == os.path.realpath(other)


def _output_upsert(self: SystemDatabase) -> Any:
    """A workflow's output, written over an earlier one's (as DBOS writes it)."""
    insert = self.dialect.insert(self.tables.workflow_output)
    return insert.on_conflict_do_update(
        index_elements=self._key_conflict("workflow_uuid"),
        set_={"output": insert.excluded.output, "error": insert.excluded.error})


class _Built(Exception):
    """The statement a DBOS method was about to run (see `_latest_version`)."""

    def __init__(self, statement: Any) -> None:
        super().__init__()
        self.statement = statement


class _Catch:
    """A stand-in connection that hands back the first statement executed on it."""

    def execute(self, statement: Any, *_args: Any) -> Any:
        raise _Built(statement)


def _latest_version(self: SystemDatabase, c: sa.Connection,
                    application_name: str | None) -> Any:
    """DBOS's newest application version (its own and unclaimed ones) with the query,
    which holds only constants, built and compiled once per application name."""
    if not self._is_sqlite or not _alike(c.dialect, self.engine.dialect):
        return _dbos_latest(self, c, application_name)
    key = ("sqlite", "latest_application_version", application_name)
    prepared = self._prepared_statements.get(key)
    if prepared is None:
        try:
            _dbos_latest(self, _Catch(), application_name)
            prepared = _UNPREPARED  # it ran nothing: not the method this was written for
        except _Built as built:
            prepared = _prepare(self, c.dialect, built.statement, {}, False)
        except Exception:  # noqa: BLE001  (it wanted more of the connection: its own way)
            prepared = _UNPREPARED
        self._prepared_statements[key] = prepared
    if prepared is _UNPREPARED:
        return _dbos_latest(self, c, application_name)
    sql, order, processors, constants, row, results = prepared
    return run(c, sql, positional(order, processors, constants), row, results).fetchone()


def _prepare(self: SystemDatabase, dialect: Any, statement: Any, values: dict[str, Any],
             insert_columns: bool) -> Any:
    """(SQL, parameter order, bind processors, the statement's own constants, the row
    type and result processors of what it returns) for `dialect` (a connected one: it
    knows its default schema), or `_UNPREPARED` for a statement whose parameters are not
    plain positions."""
    compiled = statement.compile(dialect=dialect,
                                 column_keys=list(values) if insert_columns else None,
                                 schema_translate_map={SCHEMA_PLACEHOLDER: self.schema},
                                 render_schema_translate=True)
    found = None if compiled.insert_prefetch or compiled.update_prefetch else binds(
        compiled, dialect, values)
    if found is None:
        return _UNPREPARED  # parameters made or expanded at execution
    return (str(compiled), list(compiled.positiontup), *found,
            *rows_of(compiled, dialect))


def _alike(dialect: Any, own: Any) -> bool:
    """Whether SQL compiled for `own` runs as is on a connection of `dialect`."""
    return dialect is own or (type(dialect) is type(own)
                              and dialect.paramstyle == own.paramstyle)
