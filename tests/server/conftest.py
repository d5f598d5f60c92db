"""Fixtures for the HTTP server tests: an in-process app on a temporary data dir that
holds the corpus; each test runs with no DARKROOM_* variable and in an empty directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from darkroom.server.app import create_app

from .helpers import TestClient, settings_for




@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """`make_client(**settings)`: a started TestClient; `client.settings` is its Settings."""
    with ExitStack() as stack:
        count = 0

        def make(**overrides: object) -> TestClient:
            nonlocal count
            count += 1
            settings = overrides.pop("settings", None) or settings_for(
                tmp_path / f"data{count}", **overrides)
            client = stack.enter_context(TestClient(create_app(settings)))
            client.settings = settings
            return client

        yield make


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()
