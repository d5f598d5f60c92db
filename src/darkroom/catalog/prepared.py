"""The hot statements (an upload's rows, a job's bookkeeping) run on SQLite's driver,
compiled once.

SQLAlchemy runs a prebuilt statement at about three times the cost of SQLite executing
it (the execution context, each parameter's processing, the result's set-up), and an
upload with its job runs about fifteen such statements. On SQLite, `execute` compiles a
statement once per set of parameter names into its SQL, its parameters' order and their
bind processors, with the Python-side column defaults SQLAlchemy would fill in, and runs it
on the connection's pysqlite cursor; RETURNING rows come back with SQLAlchemy's result
processors applied. The SQL and each value sent are what SQLAlchemy sends (the same
compilation, the same processors). Any other database, and a statement whose parameters
are not plain positions (an expanding IN, say), go through SQLAlchemy as before.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

_UNPREPARED = None  # a statement SQLAlchemy runs


class _Prepared(NamedTuple):
    sql: str
    order: list[str]
    processors: dict[str, Callable[[Any], Any]]
    constants: dict[str, Any]
    defaults: dict[str, Callable[[], Any]]
    row: type | None  # the type of the rows it returns (RETURNING's), None without
    results: list[Callable[[Any], Any] | None]


_cache: dict[tuple, _Prepared | None] = {}


def execute(db: Session | Connection, statement: Any,
            params: dict[str, Any] | Sequence[dict[str, Any]]) -> Any:
    """Run `statement` with `params` (a dict, or a list of dicts for many rows) in `db`'s
    transaction; the rows it returns (`Rows`) or SQLAlchemy's result. A session's pending
    changes are flushed first, as its own `execute` does."""
    if isinstance(db, Session):
        if db.get_bind().dialect.name != "sqlite":
            return db.execute(statement, params)
        if db.autoflush:
            db.flush()
    connection = db.connection() if isinstance(db, Session) else db
    dialect = connection.dialect
    many = not isinstance(params, dict)
    names = tuple(params[0] if many else params) if params else ()
    if dialect.name != "sqlite" or dialect.paramstyle != "qmark":
        return connection.execute(statement, params)
    key = (id(statement), names)
    prepared = _cache.get(key, False)
    if prepared is False:
        prepared = _cache[key] = _prepare(statement, dialect, names)
        _keep.append(statement)  # the id stays this statement's
    if prepared is _UNPREPARED:
        return connection.execute(statement, params)
    values = [_values(prepared, p) for p in params] if many else _values(prepared, params)
    return run(connection, prepared.sql, values, prepared.row, prepared.results, many)


def run(connection: Connection, sql: str, values: Any, row: type | None = None,
        results: Sequence[Callable[[Any], Any] | None] = (), many: bool = False) -> Rows:
    """Run compiled `sql` with its positional `values` (a list of them, `many`) on the
    pysqlite cursor of `connection`, in its transaction; RETURNING rows as `row`s, each
    column through its result processor. Driver errors are raised as SQLAlchemy's."""
    dialect = connection.dialect
    cursor = connection.connection.driver_connection.cursor()
    try:
        if many:
            cursor.executemany(sql, values)
        else:
            cursor.execute(sql, values)
        return Rows(cursor, row, results)
    except dialect.loaded_dbapi.Error as error:  # as SQLAlchemy raises it (IntegrityError...)
        raise DBAPIError.instance(sql, values, error, dialect.loaded_dbapi.Error,
                                  dialect=dialect) from error
    finally:
        cursor.close()


def rows_of(compiled: Any, dialect: Any) -> tuple[type | None, list]:
    """The row type and result processors of the columns a compiled statement returns (a
    SELECT's, or RETURNING's; (None, []) without); a row reads by position, by name and,
    as SQLAlchemy's, through `_mapping`."""
    columns = compiled._result_columns
    if not columns:
        return None, []
    names = [c[0] for c in columns]
    row = type("Row", (namedtuple("Row", names, rename=True),), {
        "__slots__": (), "_mapping": property(lambda self: dict(zip(names, self)))})
    return row, [c[3].dialect_impl(dialect).result_processor(dialect, None) for c in columns]


_keep: list[Any] = []


def _values(prepared: _Prepared, params: dict[str, Any]) -> tuple:
    return positional(prepared.order, prepared.processors, {
        **prepared.constants, **{k: f() for k, f in prepared.defaults.items()}, **params})


def positional(order: list[str], processors: dict[str, Callable[[Any], Any]],
               values: dict[str, Any]) -> tuple:
    """`values` as the driver takes them: in the compiled statement's `order`, each
    through its bind processor."""
    return tuple(processors[k](values[k]) if k in processors else values[k] for k in order)


def binds(compiled: Any, dialect: Any, given: Collection[str]
          ) -> tuple[dict[str, Callable[[Any], Any]], dict[str, Any]] | None:
    """The bind processors of a compiled statement and the values it holds itself (its
    binds but those `given` at execution); None if its parameters are not plain
    positions (a list expanded at execution, say)."""
    if not compiled.positional or compiled.positiontup is None or any(
            bind.expanding or bind.literal_execute for bind in compiled.binds.values()):
        return None
    processors, constants = {}, {}
    for bind_name, bind in compiled.binds.items():
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            processors[bind_name] = processor
        if bind_name not in given:
            constants[bind_name] = bind.value
    return processors, constants


def _prepare(statement: Any, dialect: Any, names: tuple[str, ...]) -> _Prepared | None:
    compiled = statement.compile(dialect=dialect, column_keys=list(names) or None)
    defaults = {}
    for column, default in [(c, c.default) for c in compiled.insert_prefetch] + [
            (c, c.onupdate) for c in compiled.update_prefetch]:
        if default is None or not (default.is_scalar or default.is_callable):
            return _UNPREPARED
        arg = default.arg
        defaults[column.key] = (lambda a=arg: a(None)) if default.is_callable else (
            lambda a=arg: a)
    found = binds(compiled, dialect, {*names, *defaults})
    if found is None:
        return _UNPREPARED
    processors, constants = found
    row, results = rows_of(compiled, dialect)
    return _Prepared(str(compiled), list(compiled.positiontup), processors, constants,
                     defaults, row, results)


class Rows:
    """What a statement run by `run` returned: its rows, processed, and its count."""

    def __init__(self, cursor: Any, row: type | None, results: Sequence[Any]) -> None:
        self._rows = [] if row is None else [
            row(*(f(v) if f else v for f, v in zip(results, raw)))
            for raw in cursor.fetchall()]
        self.rowcount = cursor.rowcount  # (with RETURNING, counted as the rows are read)

    def all(self) -> list:
        return list(self._rows)

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchone(self) -> Any:
        """The next row, None past the last (as a SQLAlchemy result's)."""
        return self._rows.pop(0) if self._rows else None

    def scalar(self) -> Any:
        """The first row's first column, None without a row (as a SQLAlchemy result's)."""
        return self._rows[0][0] if self._rows else None

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise ValueError("more than one row")
        return self.first()

    def scalar_one(self) -> Any:
        if len(self._rows) != 1:
            raise ValueError(f"{len(self._rows)} rows, one expected")
        return self._rows[0][0]
