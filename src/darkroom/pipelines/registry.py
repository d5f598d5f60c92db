"""The step registry: each kind of step is a params model and a function.

A kind's function takes a `StepContext` and its validated params and returns a JSON-able
output. It must be idempotent: DBOS runs a step again when its process died during it.
Later kinds (moderation, smart crop) plug in with `register` and need no other change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from darkroom.pipelines.context import StepContext

Run = Callable[["StepContext", Any], dict]


@dataclass(frozen=True)
class StepKind:
    name: str
    params: type[BaseModel]
    run: Run
    doc: str = field(default="")

    def validate(self, params: dict) -> BaseModel:
        """The params as the kind's model; ValueError naming the first bad field."""
        try:
            return self.params.model_validate(params)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{self.name} params: {where + ': ' if where else ''}"
                             f"{first['msg']}") from None


_KINDS: dict[str, StepKind] = {}


def register(name: str, params: type[BaseModel]) -> Callable[[Run], Run]:
    """Decorator: make `fn` the step kind `name`, configured by `params`."""
    def wrap(fn: Run) -> Run:
        _KINDS[name] = StepKind(name, params, fn, (fn.__doc__ or "").strip())
        return fn
    return wrap


def get(name: str) -> StepKind:
    _load_builtins()
    if name not in _KINDS:
        raise ValueError(f"unknown step type {name!r}; known: {', '.join(sorted(_KINDS))}")
    return _KINDS[name]


def kinds() -> list[StepKind]:
    _load_builtins()
    return sorted(_KINDS.values(), key=lambda k: k.name)


def _load_builtins() -> None:
    import darkroom.pipelines.steps  # noqa: F401  (registers the built-in kinds)
