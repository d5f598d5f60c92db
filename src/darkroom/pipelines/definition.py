"""Pipeline definitions: a trigger and a list of steps, each with retry, timeout and catch.

The semantics are those of AWS Step Functions' Task states: a step's `retry` is a list of
retriers tried in order (the first whose `errors` match the failure decides; each keeps its
own attempt count), and once no retrier applies, `catch` sends the run to a fallback step
or, when no catcher matches, fails it. Error names are `States.ALL`, `States.Timeout`,
`States.TaskFailed` (anything but a timeout) and darkroom's error codes (`corrupt_image`,
`storage_unavailable`, `delivery_failed`, ...). A step goes on to `next`, or to the step
after it in the list, unless it has `end: true`.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from typing import Literal, TypeVar

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_serializer,
                      field_validator, model_validator)

from darkroom.errors import BadRequest
from darkroom.pipelines import registry, sealing

ALL, TIMEOUT, TASK_FAILED = "States.ALL", "States.Timeout", "States.TaskFailed"
T = TypeVar("T", bound=BaseModel)
MAX_DELAY_S = 86400.0  # a retry waits at most a day, whatever the backoff says
_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def matches(errors: list[str], error: str) -> bool:
    """Whether a retrier's or catcher's `errors` cover the error named `error`."""
    return any(e == ALL or e == error or (e == TASK_FAILED and error != TIMEOUT)
               for e in errors)


def _check_all_last(rules: list, what: str) -> None:
    for rule in rules[:-1]:
        if ALL in rule.errors:
            raise ValueError(f"States.ALL must be in the last {what}")
    for rule in rules:
        if ALL in rule.errors and len(rule.errors) > 1:
            raise ValueError(f"States.ALL must be alone in its {what}'s errors")


class Retrier(_Strict):
    errors: list[str] = Field(default=[ALL], min_length=1)
    interval_s: float = Field(1.0, ge=0, le=3600)
    max_attempts: int = Field(3, ge=0, le=20, description="retries after the first try")
    backoff_rate: float = Field(2.0, ge=1.0, le=10)
    max_delay_s: float | None = Field(None, gt=0, le=86400)
    jitter: Literal["none", "full"] = "none"

    def delay(self, retry: int, fraction: float) -> float:
        """Seconds before retry number `retry` (from 1); `fraction` in [0, 1) for jitter."""
        delay = min(self.interval_s * self.backoff_rate ** (retry - 1),
                    self.max_delay_s or MAX_DELAY_S)
        return delay * fraction if self.jitter == "full" else delay


class Catcher(_Strict):
    errors: list[str] = Field(default=[ALL], min_length=1)
    next: str


class Step(_Strict):
    name: str = Field(pattern=_NAME)
    type: str
    params: dict = Field(default_factory=dict)
    retry: list[Retrier] = Field(default_factory=list, max_length=10)
    catch: list[Catcher] = Field(default_factory=list, max_length=10)
    timeout_s: float = Field(300.0, gt=0, le=86400)
    next: str | None = None
    end: bool = False

    @field_validator("params", mode="before")
    @classmethod
    def _unseal(cls, value: object) -> object:
        return sealing.unseal_params(value)

    @field_serializer("params", when_used="json")
    def _seal(self, params: dict) -> dict:
        """Stored sealed (`sealing`): a definition's JSON is what the database keeps."""
        return sealing.seal_params(params)

    @model_validator(mode="after")
    def _check(self) -> Step:
        if self.end and self.next:
            raise ValueError(f"step {self.name!r} has both next and end")
        _check_all_last(self.retry, "retrier")
        _check_all_last(self.catch, "catcher")
        registry.get(self.type).validate(self.params)
        return self


class Trigger(_Strict):
    prefix: str = Field("", max_length=1024)
    content_types: list[str] = Field(default=["image/*"], min_length=1)
    events: list[Literal["uploaded", "replaced"]] = Field(default=["uploaded", "replaced"],
                                                          min_length=1)

    def fires(self, event: str, key: str, content_type: str) -> bool:
        return (event in self.events and key.startswith(self.prefix)
                and any(fnmatch.fnmatchcase(content_type, p) for p in self.content_types))


class Pipeline(_Strict):
    name: str = Field(pattern=_NAME)
    description: str = Field("", max_length=1024)
    enabled: bool = True
    trigger: Trigger = Trigger()
    steps: list[Step] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _check_flow(self) -> Pipeline:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError("step names must be unique")
        for step in self.steps:
            targets = [step.next] + [c.next for c in step.catch]
            for target in filter(None, targets):
                if target not in names:
                    raise ValueError(f"step {step.name!r} goes to unknown step {target!r}")
        return self

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def after(self, step: Step) -> str | None:
        """The step that follows `step` when it succeeds, or None at the end."""
        if step.end:
            return None
        if step.next:
            return step.next
        index = self.steps.index(step)
        return self.steps[index + 1].name if index + 1 < len(self.steps) else None


def parse(data: dict) -> Pipeline:
    """A validated pipeline from its JSON form; BadRequest(bad_pipeline) naming the fault.
    A client's definition holds its secrets themselves: sealed values come only from the
    catalog (`sealing`), and one copied from there is refused."""
    if isinstance(data, dict) and sealing.sealed_within(data.get("steps")):
        raise BadRequest("bad pipeline: a sealed value ('sealed:...') comes only from the "
                         "catalog; send the secret itself", "bad_pipeline")
    try:
        return Pipeline.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = re.sub(r"^Value error, ", "", first["msg"])
        raise BadRequest(f"bad pipeline: {where + ': ' if where else ''}{message}",
                         "bad_pipeline") from None


def cached(model: type[T], data: dict) -> T:
    """`model` validated from `data`, remembered: runs and uploads read the same stored
    definitions over and over, and validating one compiles every rendition's plan."""
    return _validated(model, json.dumps(data, sort_keys=True))


def cached_text(model: type[T], text: str) -> T:
    """`cached`, from a JSON text as the database stores it (no parse when seen before)."""
    return _validated(model, text)


@functools.lru_cache(maxsize=512)
def _validated(model: type[T], text: str) -> T:
    return model.model_validate_json(text)


def read_yaml(text: str) -> object:
    """The YAML document in `text`; BadRequest(bad_pipeline) if it is not YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BadRequest(f"bad pipeline YAML: {error}", "bad_pipeline") from None


def load_yaml(text: str) -> list[Pipeline]:
    """Pipelines from a YAML document: `pipelines: [...]`, or one pipeline mapping."""
    document = read_yaml(text)
    if isinstance(document, dict) and "pipelines" in document:
        document = document["pipelines"]
    items = document if isinstance(document, list) else [document]
    if not all(isinstance(item, dict) for item in items):
        raise BadRequest("bad pipeline YAML: expected a mapping or a list of them",
                         "bad_pipeline")
    pipelines = [parse(item) for item in items]
    names = [p.name for p in pipelines]
    if len(set(names)) != len(names):
        raise BadRequest("bad pipeline YAML: pipeline names must be unique", "bad_pipeline")
    return pipelines
