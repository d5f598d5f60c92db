"""The catalog service on both databases: races on one key, idempotency expiry, and
storage failures that must leave the catalog as it was."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from sqlalchemy import text

from darkroom.catalog import Catalog, Staged, repository
from darkroom.errors import CatalogError, Conflict, StorageError
from darkroom.pipelines.context import stored_version

from corpus_files import CORPUS, OK_FILES
from .databases import catalog, count_rows, database_url, pg_url  # noqa: F401
from .databases import staged as staged_path

pytestmark = pytest.mark.anyio
SMALL = sorted((f for f in OK_FILES if f["container"] in ("jpeg", "png")),
               key=lambda f: f["bytes"])[:2]


def staged(entry: dict) -> Staged:
    return staged_path(CORPUS / entry["path"])


async def test_one_key_raced_by_two_uploads(catalog: Catalog, database_url: str):  # noqa: F811
    results = await asyncio.gather(*(catalog.upload(staged(e), "race.img", []) for e in SMALL),
                                   return_exceptions=True)
    won = [r for r in results if isinstance(r, tuple)]
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], Conflict), results
    stored = (catalog.storage.root / "race.img").read_bytes()
    assert hashlib.sha256(stored).hexdigest() == won[0][0]["sha256"]
    assert (count_rows(database_url, "images"), count_rows(database_url, "outbox")) == (1, 1)


async def test_one_idempotency_key_raced_by_the_same_request(catalog: Catalog):
    results = await asyncio.gather(*(catalog.upload(staged(SMALL[0]), "same.img", [], "k1")
                                     for _ in range(2)))
    assert results[0][0] == results[1][0]
    assert sorted(replayed for _, replayed in results) == [False, True]


async def test_an_expired_idempotency_key_is_forgotten(catalog: Catalog):
    await catalog.upload(staged(SMALL[0]), "first.img", [], "k2")
    with catalog.engine.begin() as connection:
        connection.execute(text("UPDATE idempotency_keys SET expires_at = created_at"))
    body, replayed = await catalog.upload(staged(SMALL[1]), "second.img", [], "k2")
    assert (body["key"], replayed) == ("second.img", False)


async def test_a_storage_failure_on_delete_changes_nothing(
        catalog: Catalog, database_url, monkeypatch):  # noqa: F811
    body, _ = await catalog.upload(staged(SMALL[0]), "kept.img", ["t"])

    def fail(key: str) -> None:
        raise StorageError("injected")

    monkeypatch.setattr(catalog.storage.blocking, "delete", fail)
    with pytest.raises(StorageError):
        await catalog.delete(body["id"])
    monkeypatch.undo()
    assert (await catalog.get(body["id"]))["key"] == "kept.img"
    assert (catalog.storage.root / "kept.img").is_file()
    assert count_rows(database_url, "outbox") == 1


async def test_a_replace_that_fails_puts_the_old_bytes_back(
        catalog: Catalog, database_url, monkeypatch):  # noqa: F811
    body, _ = await catalog.upload(staged(SMALL[0]), "swap.img", [])
    original = (catalog.storage.root / "swap.img").read_bytes()

    def fail(*_args, **_kwargs):
        raise CatalogError("injected after the new bytes were stored")

    monkeypatch.setattr(repository, "add_event", fail)
    with pytest.raises(CatalogError):
        await catalog.replace(body["id"], staged(SMALL[1]))
    monkeypatch.undo()
    assert (catalog.storage.root / "swap.img").read_bytes() == original
    detail = await catalog.get(body["id"])
    assert (detail["version"], detail["sha256"]) == (1, body["sha256"])
    assert count_rows(database_url, "outbox") == 1
    with catalog.engine.begin() as connection:  # written again: a new etag, the same bytes
        etag = connection.execute(text("SELECT etag FROM image_versions")).scalar_one()
    assert catalog.storage.blocking.get_if_match("swap.img", etag) is None
    assert stored_version(catalog.storage, "swap.img", etag, body["sha256"]) == original


async def test_replacing_drops_stored_renditions(catalog: Catalog, database_url):  # noqa: F811
    body, _ = await catalog.upload(staged(SMALL[0]), "r.img", [])
    old_key = f"_renditions/{body['id']}/{body['sha256'][:16]}-p1.webp"
    new_key = f"_renditions/{body['id']}/{staged(SMALL[1]).sha256[:16]}-p1.webp"
    await catalog.storage.put(old_key, b"old derivative")
    await catalog.storage.put(new_key, b"the new version's, made by a quick job")
    with catalog.engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO renditions (version_id, plan_hash, storage_key, format, bytes, "
            "created_at) SELECT id, 'p1', :key, 'webp', 14, created_at FROM image_versions"),
            {"key": old_key})
    assert len((await catalog.get(body["id"]))["renditions"]) == 1
    replaced = await catalog.replace(body["id"], staged(SMALL[1]))
    assert replaced["version"] == 2 and replaced["renditions"] == []
    assert not (catalog.storage.root / old_key).exists()
    assert (catalog.storage.root / new_key).exists()
    assert count_rows(database_url, "renditions") == 0


async def test_only_a_received_file_is_moved_into_storage(catalog: Catalog, tmp_path: Path):
    """An upload received into the catalog's own temporary file is renamed into place; a
    caller's file (the CLI uploads files where they lie) is only read, never taken."""
    entry = SMALL[0]
    source = CORPUS / entry["path"]
    await catalog.upload(staged(entry), "theirs.jpg", [])
    assert source.read_bytes() == (tmp_path / "storage" / "theirs.jpg").read_bytes()
    received = tmp_path / "upload-1.part"
    received.write_bytes(source.read_bytes())
    await catalog.upload(Staged(received, entry["sha256"], entry["bytes"], owned=True),
                         "ours.jpg", [])
    assert not received.exists()
    assert (tmp_path / "storage" / "ours.jpg").read_bytes() == source.read_bytes()
