"""The catalog: images, versions, renditions, idempotency keys and the event outbox, in
SQLite or PostgreSQL through SQLAlchemy, with Alembic migrations run in code.

The names below are imported on first use, so that importing a module of the catalog (its
models, say) does not import the service, and with it the pipelines that import those
models: any darkroom module may be the first one imported."""

from importlib import import_module

_EXPORTS = {"Catalog": "service", "Staged": "service", "ImageQuery": "repository",
            "parse_tags": "repository", "make_engine": "db", "migrate": "db"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"darkroom.catalog.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'darkroom.catalog' has no attribute {name!r}")
