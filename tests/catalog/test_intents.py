"""Uploads killed between their storage writes and their commit, on both databases: the
intent each writes first, and `settle`, which undoes what such an upload stored."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from darkroom.catalog import Catalog, Staged, intents
from darkroom.errors import Conflict, StorageError

from corpus_files import CORPUS, OK_FILES
from .databases import catalog, count_rows, database_url, pg_url  # noqa: F401
from .databases import staged as staged_path

pytestmark = pytest.mark.anyio
PHOTO = next(f for f in OK_FILES if f["container"] == "jpeg")
OTHER = next(f for f in OK_FILES if f["container"] == "png")

# An upload in a process of its own, killed by SIGKILL right after the object's put,
# inside its transaction.
KILLED_UPLOAD = textwrap.dedent("""
    import asyncio, hashlib, os, shutil, sys
    from pathlib import Path
    from darkroom.catalog import Catalog, Staged, make_engine
    from darkroom.config import Limits
    from darkroom.server.pool import RenderPool
    from darkroom.storage import LocalStorage
    url, root, photo = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    storage = LocalStorage(root / "storage")
    put_file = storage.blocking.put_file
    def put_then_die(*args, **kwargs):
        put_file(*args, **kwargs)
        os.kill(os.getpid(), 9)
    storage.blocking.put_file = put_then_die
    catalog = Catalog(make_engine(url), storage, RenderPool(1, 4), Limits(),
                      journal=root / "tmp")
    staged = root / "staged.jpg"
    shutil.copyfile(photo, staged)
    data = staged.read_bytes()
    asyncio.run(catalog.upload(Staged(staged, hashlib.sha256(data).hexdigest(), len(data),
                                      owned=True), "killed.jpg", []))
""")


def staged(entry: dict) -> Staged:
    return staged_path(CORPUS / entry["path"])


def left_behind(catalog: Catalog, entry: intents.Entry) -> Path:
    """An intent as a process killed mid-upload leaves it: written, then unlocked."""
    intent = intents.intend(catalog.journal, entry)
    intent.file.close()
    return intent.path


def stored(catalog: Catalog) -> set[str]:
    root = catalog.storage.root
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


async def test_an_upload_killed_before_its_commit_leaves_nothing(
        catalog: Catalog, database_url, tmp_path):  # noqa: F811
    killed = subprocess.run([sys.executable, "-c", KILLED_UPLOAD, database_url, str(tmp_path),
                             str(CORPUS / PHOTO["path"])], capture_output=True, timeout=120)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    [path] = catalog.journal.glob("intent-*.json")
    entry = intents.Entry(**json.loads(path.read_text()))
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

    assert await catalog.settle() == 4
    assert stored(catalog) == {"kept.jpg", "loose.jpg"}
    assert not list(catalog.journal.glob("intent-*"))
    assert (await catalog.get(body["id"]))["sha256"] == sha


async def test_intents_held_or_being_written_are_left_alone(catalog: Catalog):
    held = intents.intend(catalog.journal, intents.Entry("a.jpg", "a" * 32, "0" * 64))
    fresh = catalog.journal / "intent-fresh.new"
    stale = catalog.journal / "intent-stale.new"
    for path in (fresh, stale):
        path.write_text("{")
    os.utime(stale, (time.time() - 2 * 3600,) * 2)
    unreadable = catalog.journal / "intent-garbled.json"
    unreadable.write_text("not json")
    catalog.storage.blocking.put("a.jpg", b"an upload under way")

    assert await catalog.settle() == 1  # the unreadable one only
    assert held.path.exists() and fresh.exists() and not stale.exists()
    assert not unreadable.exists() and stored(catalog) == {"a.jpg"}
    held.close()
    assert not held.path.exists()


async def test_an_intent_whose_storage_fails_stays_for_the_next_start(
        catalog: Catalog, monkeypatch):
    shutil.copyfile(CORPUS / PHOTO["path"], catalog.storage.root / "p.jpg")
    sha = hashlib.sha256((CORPUS / PHOTO["path"]).read_bytes()).hexdigest()
    path = left_behind(catalog, intents.Entry("p.jpg", "e" * 32, sha))

    def fail(key: str) -> bytes:
        raise StorageError("injected")

    with monkeypatch.context() as patched:
        patched.setattr(catalog.storage.blocking, "get", fail)
        assert await catalog.settle() == 0
    assert path.exists() and stored(catalog) == {"p.jpg"}
    assert await catalog.settle() == 1
    assert stored(catalog) == set() and not path.exists()
