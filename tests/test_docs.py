"""Everything a user can set or see is documented in the README."""

from __future__ import annotations

import ast
from pathlib import Path

from darkroom import errors
from darkroom.config import Settings
from darkroom.events.settings import SINK_MODELS, RetryPolicy

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
ERROR_CLASSES = {name for name in dir(errors) if isinstance(getattr(errors, name), type)
                 and issubclass(getattr(errors, name), errors.DarkroomError)}


def raised_codes() -> set[str]:
    """Every code passed to a DarkroomError class anywhere in src/, found in the syntax tree."""
    codes = {getattr(errors, name).default_code for name in ERROR_CLASSES}
    for path in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ERROR_CLASSES):
                continue
            args = [*node.args[1:2], *(k.value for k in node.keywords if k.arg == "code")]
            codes |= {a.value for a in args if isinstance(a, ast.Constant)}
    return codes - {"internal", "too_large", "bad_config", "unsafe_binding"}


def test_every_error_code_is_in_the_readme():
    missing = sorted(c for c in raised_codes() if f"`{c}`" not in README)
    assert not missing, f"document these error codes in README.md: {missing}"


def test_every_setting_is_in_the_readme():
    groups = {"limits", "s3", "thumbor", "sih", "events", "pipelines", "retention"}
    names = [*(Settings.model_fields.keys() - groups),
             *(f"{group}.{n}" for group in groups
               for n in type(getattr(Settings(), group)).model_fields),
             *(f"events.retry.{n}" for n in RetryPolicy.model_fields)]
    missing = [n for n in names if f"`{n}`" not in README]
    assert not missing, f"document these settings in README.md: {missing}"


def test_every_sink_option_is_in_the_readme():
    section = README.split("## Events and notifications")[1].split("\n## ")[0]
    names = {n for model in SINK_MODELS for n in model.model_fields}
    missing = sorted(n for n in names if f"`{n}`" not in section)
    assert not missing, f"document these sink options in README.md: {missing}"


def test_the_readme_quick_start_is_the_ci_command():
    assert "./run.sh" in README and "./test.sh" in README
    assert "./test.sh" in (ROOT / ".ci" / "run").read_text()
