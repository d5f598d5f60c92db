"""The secrets of stored pipeline definitions are sealed (`pipelines.sealing`): stored
sealed, read open, the same way each time; rotated keys still open them; a key nobody
holds any more is a clear error; definitions stored plain before still read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from darkroom.catalog import make_engine
from darkroom.cli import app
from darkroom.config import Settings
from darkroom.errors import BadRequest
from darkroom.pipelines import admin, queue, sealing
from darkroom.pipelines.definition import Pipeline, cached, parse

from catalog.databases import database_url, pg_url  # noqa: F401

URL = "https://hooks.example.com/services/T0/B0/very-secret-path"
HOOK = {"name": "p", "steps": [{"name": "w", "type": "webhook", "params": {
    "url": URL, "signing_keys": ["first-key", "second-key"], "timeout_s": 5}}]}


@pytest.fixture(autouse=True)
def keys() -> Iterator[list[str]]:
    """Two fresh keys in use (the first seals); none again after the test."""
    made = [sealing.new_key(), sealing.new_key()]
    sealing.use(made)
    yield made
    sealing.use([])


def test_a_definition_is_stored_sealed_and_read_open() -> None:
    stored = parse(HOOK).model_dump(mode="json")
    params = stored["steps"][0]["params"]
    assert params["timeout_s"] == 5
    assert all(v.startswith(sealing.PREFIX) for v in [params["url"], *params["signing_keys"]])
    assert "secret-path" not in json.dumps(stored) and "first-key" not in json.dumps(stored)
    assert parse(HOOK).model_dump(mode="json") == stored  # the same each time
    opened = cached(Pipeline, stored).steps[0].params
    assert opened == HOOK["steps"][0]["params"]


def test_rotated_keys_still_open_and_a_lost_key_is_named(keys: list[str]) -> None:
    stored = parse(HOOK).model_dump(mode="json")
    sealing.use([sealing.new_key(), keys[0]])  # a new key seals, the old one still opens
    assert Pipeline.model_validate(stored).steps[0].params["signing_keys"][0] == "first-key"
    resealed = Pipeline.model_validate(stored).model_dump(mode="json")
    assert resealed != stored
    sealing.use([keys[1]])
    with pytest.raises(ValueError, match="no key of `secret_keys` opens"):
        Pipeline.model_validate(stored)


def test_plain_definitions_still_read_and_no_key_stores_plain() -> None:
    assert Pipeline.model_validate(HOOK).steps[0].params["url"] == URL  # stored before
    sealing.use([])
    assert parse(HOOK).model_dump(mode="json")["steps"][0]["params"]["url"] == URL


def test_a_key_is_64_bytes() -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        sealing.use(["c2hvcnQ="])


def test_sqlite_without_keys_uses_a_key_file_postgresql_stores_plain(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    sealing.configure(settings)
    key_file = tmp_path / "data" / "secret.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    stored = parse(HOOK).model_dump(mode="json")
    sealing.configure(settings)  # the same file again: what it sealed still opens
    assert Pipeline.model_validate(stored).steps[0].params["url"] == URL
    explicit = sealing.new_key()
    sealing.configure(Settings(data_dir=tmp_path / "data", secret_keys=[explicit]))
    assert parse(HOOK).model_dump(mode="json") != stored  # the key set wins over the file
    sealing.configure(Settings(data_dir=tmp_path / "other",
                               database_url="postgresql://u@127.0.0.1/x"))
    assert not (tmp_path / "other" / "secret.key").exists()
    assert parse(HOOK).model_dump(mode="json")["steps"][0]["params"]["url"] == URL


def test_saved_pipelines_refuse_a_mask_and_show_masked(database_url: str) -> None:
    engine = make_engine(database_url)
    queue.migrate(engine)
    try:
        with Session(engine) as session, session.begin():
            shown, _ = admin.save_pipeline(session, parse(HOOK))
            with pytest.raises(BadRequest, match="masked secret"):
                admin.save_pipeline(session, parse({**HOOK, "steps": [{
                    **HOOK["steps"][0], "params": {"url": URL, "signing_keys": [admin.MASK]}}]}))
        with engine.connect() as connection:
            row = connection.execute(text("SELECT definition FROM pipelines")).scalar_one()
        assert "secret-path" not in str(row) and "first-key" not in str(row)
        params = shown["steps"][0]["params"]
        assert params["url"] == "https://hooks.example.com/**********"
        assert params["signing_keys"] == admin.MASK
        with engine.connect() as connection:
            (pipeline,) = queue.read_pipelines(connection, SimpleNamespace())
        assert pipeline.steps[0].params["signing_keys"] == ["first-key", "second-key"]
    finally:
        engine.dispose()


def test_processes_starting_together_share_one_key_file(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        made = set(pool.map(lambda _: sealing.key_file(tmp_path / "data"), range(16)))
    assert len(made) == 1 and [p.name for p in (tmp_path / "data").iterdir()] == ["secret.key"]


def test_the_cli_prints_a_usable_key() -> None:
    result = CliRunner().invoke(app, ["secret-key"])
    assert result.exit_code == 0
    sealing.use([result.stdout.strip()])


def test_secrets_are_sealed_at_any_depth_as_they_are_masked() -> None:
    params = {"auth": {"token": "tok-1", "scheme": "bearer"}, "targets": [
        {"url": URL, "name": "a"}], "note": "token"}
    sealed = sealing.seal_params(params)
    assert sealed["auth"]["token"].startswith(sealing.PREFIX)
    assert sealed["targets"][0]["url"].startswith(sealing.PREFIX)
    assert (sealed["auth"]["scheme"], sealed["targets"][0]["name"], sealed["note"]) == (
        "bearer", "a", "token")
    assert sealing.unseal_params(sealed) == params


def test_a_client_may_not_send_sealed_values_nor_move_one_to_another_field() -> None:
    stored = parse(HOOK).model_dump(mode="json")
    with pytest.raises(BadRequest, match="comes only from the catalog"):
        parse(stored)
    moved = json.loads(json.dumps(stored))
    params = moved["steps"][0]["params"]
    params["url"], params["signing_keys"] = params["signing_keys"][0], [params["url"]]
    with pytest.raises(ValueError, match="no key of `secret_keys` opens"):
        Pipeline.model_validate(moved)


def test_a_value_that_is_not_text_is_sealed_whole() -> None:
    params = {"token": 12345, "secret": {"a": ["b", 1]}, "password": None}
    sealed = sealing.seal_params(params)
    assert all(sealed[k].startswith(sealing.PREFIX) for k in ("token", "secret"))
    assert sealed["password"] is None and "12345" not in json.dumps(sealed)
    assert sealing.unseal_params(sealed) == params
