"""One catalog write: a database transaction whose storage changes are undone with it,
and whose intents (`intents`) end with it, on the transaction's own thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from darkroom.catalog import intents
from darkroom.errors import CatalogError

log = structlog.get_logger("darkroom.catalog")
T = TypeVar("T")
Undo = list[Callable[[], None]]


def transaction(engine: Engine, work: Callable[[Session, Undo], T],
                then: Callable[[T], None] | None = None,
                held: list[intents.Intent] | None = None) -> T:
    """`work` in one transaction; `then(result)` after the commit. When `work` fails, its
    `undo` actions run before the rollback, while the transaction still holds its locks
    (a key's, `repository.lock_key`), so that no writer waiting for them sees the
    half-done change or has its own write undone. `held`, the intents `work` writes, end
    with the transaction (`intents.end`). On PostgreSQL a failed commit of a write with
    intents undoes nothing."""
    undo: Undo = []
    undone, committing = True, False
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            try:
                result = work(session, undo)
            except BaseException:
                undone = _undo(undo)
                raise
            committing = True
    except BaseException as error:
        if committing and held and engine.dialect.name == "postgresql":
            # the commit's outcome is unknown (the connection may have dropped after
            # the server committed): nothing is undone, `settle` decides by the catalog
            undo.clear()
            undone = False
        undone = _undo(undo) and undone  # a failed commit (a failed `work`: undone)
        intents.end(held, stands=False, undone=undone)
        if isinstance(error, SQLAlchemyError):
            raise CatalogError(f"catalog write failed: {str(error).splitlines()[0]}"
                               ) from error
        raise
    intents.end(held)  # committed: what the intents name stands
    if then is not None:
        then(result)
    return result


def _undo(undo: Undo) -> bool:
    """Run and forget `undo`'s actions, last first; a failed one is logged. Whether all
    succeeded."""
    done = True
    while undo:
        try:
            undo.pop()()
        except Exception as failed:  # noqa: BLE001  (the rest must still run)
            log.error("undo_failed", error=getattr(failed, "message", str(failed)))
            done = False
    return done
