"""Uploads killed between their storage writes and their commit, on both databases: the
intent each writes first, and `settle`, which undoes what such an upload stored."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import SessionTransaction

from darkroom.catalog import (Catalog, Staged, intent_spares, intents, make_engine,
                              repository)
from darkroom.config import Limits
from darkroom.errors import CatalogError, Conflict, StorageError
from darkroom.server.pool import RenderPool
from darkroom.storage import LocalStorage

from corpus_files import CORPUS, OK_FILES
from .databases import TABLES, catalog, count_rows, database_url, pg_url, rows  # noqa: F401
from .databases import staged as staged_path

pytestmark = pytest.mark.anyio
PHOTO = next(f for f in OK_FILES if f["container"] == "jpeg")
OTHER = next(f for f in OK_FILES if f["container"] == "png")

# A write in a process of its own (an upload, a replace of image argv[5] or its delete),
# killed by SIGKILL right after it changed the object, inside its transaction.
KILLED = textwrap.dedent("""
    import asyncio, hashlib, os, shutil, sys
    from pathlib import Path
    from darkroom.catalog import Catalog, Staged, make_engine
    from darkroom.config import Limits
    from darkroom.server.pool import RenderPool
    from darkroom.storage import LocalStorage
    url, root, photo, op = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    storage = LocalStorage(root / "storage")
    def then_die(write):
        def written(*args, **kwargs):
            write(*args, **kwargs)
            os.kill(os.getpid(), 9)
        return written
    storage.blocking.put_file = then_die(storage.blocking.put_file)
    storage.blocking.delete = then_die(storage.blocking.delete)
    catalog = Catalog(make_engine(url), storage, RenderPool(1, 4), Limits(),
                      journal=root / "tmp")
    staged = root / "staged"
    shutil.copyfile(photo, staged)
    data = staged.read_bytes()
    upload = Staged(staged, hashlib.sha256(data).hexdigest(), len(data), owned=True)
    if op == "upload":
        asyncio.run(catalog.upload(upload, "killed.jpg", []))
    elif op == "replace":
        asyncio.run(catalog.replace(sys.argv[5], upload))
    else:
        asyncio.run(catalog.delete(sys.argv[5]))
""")


def killed(catalog: Catalog, url: str, root: Path, op: str, photo: dict = PHOTO,
           image_id: str = "") -> intents.Entry:
    """Run `op` in a process killed mid-write; the entry of the intent it left."""
    died = subprocess.run([sys.executable, "-c", KILLED, url, str(root),
                           str(CORPUS / photo["path"]), op, image_id],
                          capture_output=True, timeout=120)
    assert died.returncode == -9, died.stderr.decode()[-2000:]
    [path] = catalog.journal.glob("intent-*.json")
    return intents.Entry(**json.loads(path.read_text()))


def staged(entry: dict) -> Staged:
    return staged_path(CORPUS / entry["path"])


def left_behind(catalog: Catalog, entry: intents.Entry, previous: bytes | None = None
                ) -> Path:
    """An intent as a process killed mid-write leaves it: written, then unlocked."""
    intent = intents.intend(catalog.journal, entry, previous)
    intent.file.close()
    return intent.path


def stored(catalog: Catalog) -> set[str]:
    root = catalog.storage.root
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


async def test_an_upload_killed_before_its_commit_leaves_nothing(
        catalog: Catalog, database_url, tmp_path):  # noqa: F811
    entry = killed(catalog, database_url, tmp_path, "upload")
    assert entry.key == "killed.jpg" and count_rows(database_url, "images") == 0
    head_start = f"_renditions/{entry.image_id}/{entry.sha256[:16]}-0.webp"
    catalog.storage.blocking.put(head_start, b"a head start")  # as one stored before the kill
    assert stored(catalog) == {"killed.jpg", head_start}

    assert await catalog.settle() == 1
    assert stored(catalog) == set() and not list(catalog.journal.glob("intent-*"))
    assert not (catalog.storage.root / "_renditions").exists()
    assert count_rows(database_url, "images") == 0
    body, _ = await catalog.upload(staged(PHOTO), "killed.jpg", [])  # the key is free
    assert body["key"] == "killed.jpg"


async def test_a_replace_killed_before_its_commit_puts_the_old_bytes_back(
        catalog: Catalog, database_url, tmp_path):  # noqa: F811
    body, _ = await catalog.upload(staged(PHOTO), "r.jpg", [])
    old = (catalog.storage.root / "r.jpg").read_bytes()
    entry = killed(catalog, database_url, tmp_path, "replace", OTHER, body["id"])
    assert hashlib.sha256((catalog.storage.root / "r.jpg").read_bytes()).hexdigest() == (
        entry.sha256)  # the new bytes, never catalogued
    assert len(list(catalog.journal.glob("intent-*.previous"))) == 1

    assert await catalog.settle() == 1
    assert (catalog.storage.root / "r.jpg").read_bytes() == old
    assert not list(catalog.journal.glob("intent-*"))
    detail = await catalog.get(body["id"])
    assert (detail["version"], detail["sha256"]) == (1, body["sha256"])
    replaced = await catalog.replace(body["id"], staged(OTHER))  # the image works on
    assert replaced["version"] == 2


async def test_a_delete_killed_after_deleting_the_object_is_finished(
        catalog: Catalog, database_url, tmp_path):  # noqa: F811
    body, _ = await catalog.upload(staged(PHOTO), "d.jpg", [])
    killed(catalog, database_url, tmp_path, "delete", image_id=body["id"])
    assert count_rows(database_url, "images") == 1 and "d.jpg" not in stored(catalog)

    assert await catalog.settle() == 1
    assert count_rows(database_url, "images") == 0 and stored(catalog) == set()
    assert not list(catalog.journal.glob("intent-*"))
    assert [r[0] for r in rows(database_url, "SELECT type FROM outbox ORDER BY created_at")
            ] == ["image.uploaded", "image.deleted"]


async def test_what_committed_or_is_anothers_is_kept(catalog: Catalog):
    body, _ = await catalog.upload(staged(PHOTO), "kept.jpg", [])
    with pytest.raises(Conflict):  # a failed upload leaves no intent either
        await catalog.upload(staged(OTHER), "kept.jpg", [])
    assert not list(catalog.journal.glob("intent-*"))
    sha = body["sha256"]
    left_behind(catalog, intents.Entry("kept.jpg", body["id"], sha))  # killed after commit
    left_behind(catalog, intents.Entry("kept.jpg", "b" * 32, sha))  # the key went to another
    catalog.storage.blocking.put(f"_renditions/{'b' * 32}/x.webp", b"its head start")
    catalog.storage.blocking.put("loose.jpg", b"bytes written since")
    left_behind(catalog, intents.Entry("loose.jpg", "c" * 32, sha))  # other bytes there now
    left_behind(catalog, intents.Entry("never.jpg", "d" * 32, sha))  # killed before its put
    # killed before its put, the same bytes found there uncatalogued (to be adopted)
    shutil.copyfile(CORPUS / PHOTO["path"], catalog.storage.root / "adopted.jpg")
    left_behind(catalog, intents.Entry("adopted.jpg", "f" * 32, sha, found=(
        catalog.storage.blocking.head("adopted.jpg").etag)))
    # a replace that committed; one of an image deleted since; a delete killed before it
    # deleted the object; one of an image gone (it committed)
    left_behind(catalog, intents.Entry("kept.jpg", body["id"], sha, "replace"), b"old")
    left_behind(catalog, intents.Entry("gone.jpg", "e" * 32, sha, "replace"), b"old")
    left_behind(catalog, intents.Entry("kept.jpg", body["id"], "", "delete"))
    left_behind(catalog, intents.Entry("gone.jpg", "e" * 32, "", "delete"))

    assert await catalog.settle() == 9
    assert stored(catalog) == {"kept.jpg", "loose.jpg", "adopted.jpg"}
    assert not list(catalog.journal.glob("intent-*"))
    assert (await catalog.get(body["id"]))["sha256"] == sha


async def test_intents_held_or_being_written_are_left_alone(catalog: Catalog):
    held = intents.intend(catalog.journal, intents.Entry("a.jpg", "a" * 32, "0" * 64,
                                                         "replace"), b"the bytes before")
    lone = catalog.journal / "intent-lone.previous"  # its intent closed, killed before it
    fresh = catalog.journal / "intent-fresh.new"
    stale = catalog.journal / "intent-stale.new"
    for path in (fresh, stale, lone):
        path.write_text("{")
    os.utime(stale, (time.time() - 2 * 3600,) * 2)
    unreadable = catalog.journal / "intent-garbled.json"
    unreadable.write_text("not json")
    catalog.storage.blocking.put("a.jpg", b"an upload under way")

    assert await catalog.settle() == 1  # the unreadable one only
    assert held.path.exists() and held.previous() == b"the bytes before"
    assert fresh.exists() and not stale.exists() and not lone.exists()
    assert not unreadable.exists() and stored(catalog) == {"a.jpg"}
    held.close()  # its file kept as this process's spare, the bytes beside it removed
    [spare] = catalog.journal.glob(intent_spares.PATTERN)
    assert set(catalog.journal.iterdir()) == {fresh, spare}


async def test_an_intent_whose_storage_fails_stays_for_the_next_start(
        catalog: Catalog, monkeypatch):
    sha = hashlib.sha256((CORPUS / PHOTO["path"]).read_bytes()).hexdigest()
    path = left_behind(catalog, intents.Entry("p.jpg", "e" * 32, sha))
    shutil.copyfile(CORPUS / PHOTO["path"], catalog.storage.root / "p.jpg")  # its put

    def fail(key: str) -> bytes:
        raise StorageError("injected")

    with monkeypatch.context() as patched:
        patched.setattr(catalog.storage.blocking, "get", fail)
        assert await catalog.settle() == 0
    assert path.exists() and stored(catalog) == {"p.jpg"}
    assert await catalog.settle() == 1
    assert stored(catalog) == set() and not path.exists()


async def test_writes_left_undone_are_undone_newest_first(
        catalog: Catalog, database_url):  # noqa: F811
    """Writes of one image killed one after another (another process went on serving):
    each undone in the reverse order of their puts leaves what the catalog says."""
    first, _ = await catalog.upload(staged(PHOTO), "o.jpg", [])
    committed = (catalog.storage.root / "o.jpg").read_bytes()
    other = (CORPUS / OTHER["path"]).read_bytes()
    # a replace killed after its put, then another that overwrote those bytes
    for previous, new in ((committed, other), (other, b"third bytes")):
        left_behind(catalog, intents.Entry("o.jpg", first["id"], hashlib.sha256(
            new).hexdigest(), "replace"), previous)
        catalog.storage.blocking.put("o.jpg", new)
    # a delete killed after deleting the object, then a replace of the image (no object)
    second, _ = await catalog.upload(staged(OTHER), "q.jpg", [])
    left_behind(catalog, intents.Entry("q.jpg", second["id"], "", "delete"))
    catalog.storage.blocking.delete("q.jpg")
    left_behind(catalog, intents.Entry("q.jpg", second["id"], hashlib.sha256(
        b"new bytes").hexdigest(), "replace"))
    catalog.storage.blocking.put("q.jpg", b"new bytes")

    assert await catalog.settle() == 4
    assert (catalog.storage.root / "o.jpg").read_bytes() == committed
    assert stored(catalog) == {"o.jpg"} and count_rows(database_url, "images") == 1


async def test_an_intent_outlives_a_cancelled_caller_until_its_transaction_ends(
        catalog: Catalog, database_url, monkeypatch):  # noqa: F811
    """A caller cancelled mid-upload (a server shutting down) does not stop its
    transaction: the intent stays until that ends, so a kill meanwhile is still settled."""
    entered, release = threading.Event(), threading.Event()
    put_file = catalog.storage.blocking.put_file

    def slow(*args, **kwargs):
        entered.set()
        release.wait(30)
        return put_file(*args, **kwargs)

    monkeypatch.setattr(catalog.storage.blocking, "put_file", slow)
    task = asyncio.create_task(catalog.upload(staged(PHOTO), "c.jpg", []))
    assert await asyncio.to_thread(entered.wait, 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(list(catalog.journal.glob("intent-*.json"))) == 1  # it goes on
    release.set()
    for _ in range(600):
        if not list(catalog.journal.glob("intent-*")):
            break
        await asyncio.sleep(0.05)
    assert not list(catalog.journal.glob("intent-*")) and "c.jpg" in stored(catalog)
    assert count_rows(database_url, "images") == 1  # committed, though nobody waited


async def test_settle_waits_for_a_live_upload_of_the_key(
        catalog: Catalog, database_url, monkeypatch):  # noqa: F811
    """A dead intent of a key that a live upload (another process's) is writing, with the
    same bytes: settle holds the key as uploads do, so it sees that upload's commit and
    keeps its object."""
    sha = hashlib.sha256((CORPUS / PHOTO["path"]).read_bytes()).hexdigest()
    left_behind(catalog, intents.Entry("l.jpg", "a" * 32, sha))
    stored_it, release = threading.Event(), threading.Event()
    put_file = catalog.storage.blocking.put_file

    def then_wait(*args, **kwargs):
        info = put_file(*args, **kwargs)
        stored_it.set()
        release.wait(30)
        return info

    monkeypatch.setattr(catalog.storage.blocking, "put_file", then_wait)
    upload = asyncio.create_task(catalog.upload(staged(PHOTO), "l.jpg", []))
    assert await asyncio.to_thread(stored_it.wait, 30)
    settling = asyncio.create_task(catalog.settle())
    await asyncio.sleep(1.0)
    assert not settling.done()  # waiting for the key
    release.set()
    body, _ = await upload
    assert await settling == 1
    assert "l.jpg" in stored(catalog) and (await catalog.get(body["id"]))["key"] == "l.jpg"


async def test_a_write_whose_undo_fails_leaves_its_intent_to_the_next_start(
        catalog: Catalog, database_url, monkeypatch):  # noqa: F811
    """An upload whose transaction fails after its put, and whose undo (the object's
    delete) fails too: the intent stays, unlocked, and the next start deletes the object.
    A delete whose storage answered an error after deleting the object: its intent stays,
    and the next start finishes it."""
    body, _ = await catalog.upload(staged(OTHER), "d.jpg", [])
    real_delete = catalog.storage.blocking.delete

    def fail(key: str) -> None:
        raise StorageError("injected")

    def delete_then_fail(key: str) -> None:
        real_delete(key)
        raise StorageError("injected after the delete")

    with monkeypatch.context() as patched:
        patched.setattr(repository, "add_event", lambda *a, **k: fail(""))  # after the put
        patched.setattr(catalog.storage.blocking, "delete", fail)  # and the undo fails
        with pytest.raises(StorageError):
            await catalog.upload(staged(PHOTO), "u.jpg", [])
    with monkeypatch.context() as patched:
        patched.setattr(catalog.storage.blocking, "delete", delete_then_fail)
        with pytest.raises(StorageError):
            await catalog.delete(body["id"])
    assert len(list(catalog.journal.glob("intent-*.json"))) == 2
    assert stored(catalog) == {"u.jpg"} and count_rows(database_url, "images") == 1

    assert await catalog.settle() == 2
    assert stored(catalog) == set() and count_rows(database_url, "images") == 0
    assert not list(catalog.journal.glob("intent-*"))


async def test_one_process_settles_at_a_time(catalog: Catalog):
    """Processes that start together take turns (each settles newest first what it
    finds): a settle waits for the folder's settle lock."""
    catalog.journal.mkdir(parents=True, exist_ok=True)
    other = os.open(catalog.journal, os.O_RDONLY)  # as another process settling
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        settling = asyncio.create_task(catalog.settle())
        await asyncio.sleep(0.5)
        assert not settling.done()
        fcntl.flock(other, fcntl.LOCK_UN)
        assert await asyncio.wait_for(settling, 30) == 0
    finally:
        os.close(other)


async def test_an_intent_another_user_left_is_skipped_not_fatal(catalog: Catalog, monkeypatch):
    """An intent this process may not open (another user's) is logged and left; the
    others are settled and the server still starts."""
    left_behind(catalog, intents.Entry("x.jpg", "a" * 32, "0" * 64))
    unreadable = left_behind(catalog, intents.Entry("y.jpg", "b" * 32, "0" * 64))

    def refuse(path, *args, **kwargs):
        if Path(path) == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(intents, "open", refuse, raising=False)
    assert await catalog.settle() == 1
    assert [p.name for p in catalog.journal.glob("intent-*")] == [unreadable.name]


async def test_a_commit_whose_outcome_is_unknown_is_left_to_settle(
        pg_url, tmp_path, monkeypatch):  # noqa: F811
    """PostgreSQL: a commit that raised may have committed (the connection dropped after
    the server did): the upload's object is not deleted, its intent is left, and the
    next start finds the upload catalogued and lets it stand."""
    engine = make_engine(pg_url)
    (tmp_path / "storage").mkdir()
    service = Catalog(engine, LocalStorage(tmp_path / "storage"), RenderPool(1, 4), Limits(),
                      journal=tmp_path / "tmp")
    commit = SessionTransaction.commit

    def committed_then_lost(self, *args, **kwargs):
        commit(self, *args, **kwargs)
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    try:
        with monkeypatch.context() as patched:
            patched.setattr(SessionTransaction, "commit", committed_then_lost)
            with pytest.raises(CatalogError):
                await service.upload(staged(PHOTO), "lost.jpg", [])
        assert "lost.jpg" in stored(service) and count_rows(pg_url, "images") == 1
        assert len(list(service.journal.glob("intent-*.json"))) == 1
        assert await service.settle() == 1
        assert "lost.jpg" in stored(service) and not list(service.journal.glob("intent-*"))
    finally:
        service.pool.close()
        with engine.begin() as connection:  # this worker's database, for the next test
            connection.execute(text(f"TRUNCATE {TABLES} CASCADE"))
        service.close()
