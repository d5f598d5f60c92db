"""One contract, every backend: LocalStorage and ObjectStorage (on moto) must both pass it."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
from obstore.exceptions import GenericError

from darkroom.catalog.models import utcnow
from darkroom.config import S3, Settings
from darkroom.errors import BadRequest, DarkroomError, NotFound, StorageError
from darkroom.storage import LocalStorage, ObjectStorage, Storage, exists, open_storage
from darkroom.storage import local, temps
from darkroom.storage import object as object_module

pytestmark = pytest.mark.anyio

SHORT_RETRY = {
    "max_retries": 1,
    "retry_timeout": timedelta(seconds=5),
    "backoff": {
        "init_backoff": timedelta(milliseconds=10),
        "max_backoff": timedelta(milliseconds=100),
        "base": 2,
    },
}
BAD_KEYS = ["../x", "/abs", "a//b", "a/./b", "a\\b", "\x00", "", "k" * 1025, "a/", "a/.."]
NEVER_WRITTEN = [f"d/.x.4194305.{'0' * 32}.tmp", f".x.{'9' * 25}-0badcafe.{'a' * 32}.tmp/k",
                 "d/" + "é" * 101]  # a segment over 200 bytes: its temp name would not fit


@pytest.fixture(params=["local", "s3", "local-blocking", "s3-blocking"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param.startswith("local"):
        (tmp_path / "root").mkdir()
        backend: Storage = LocalStorage(tmp_path / "root")
    else:
        settings: S3 = request.getfixturevalue("s3_settings")
        backend = ObjectStorage(settings, retry_config=SHORT_RETRY)
    return ThroughBlocking(backend) if request.param.endswith("blocking") else backend


class ThroughBlocking:
    """A backend whose reads and writes the contract makes through `blocking`, from the
    test's own thread (head, list and ping stay the backend's)."""

    def __init__(self, backend: Storage) -> None:
        self.backend = backend

    async def get(self, key: str) -> bytes:
        return self.backend.blocking.get(key)

    async def put(self, key: str, data: bytes, content_type: str | None = None,
                  sweep: bool = False):
        return self.backend.blocking.put(key, data, content_type, sweep)

    async def put_file(self, key: str, source: Path, content_type: str | None = None,
                       move: bool = False):
        return self.backend.blocking.put_file(key, source, content_type, move)

    async def delete(self, key: str) -> None:
        self.backend.blocking.delete(key)

    def __getattr__(self, name: str):
        return getattr(self.backend, name)


def is_local(storage: Storage) -> bool:
    return isinstance(getattr(storage, "backend", storage), LocalStorage)


async def keys(storage: Storage, prefix: str = "") -> set[str]:
    return {info.key async for info in storage.list(prefix)}


async def test_put_get_head(storage: Storage) -> None:
    info = await storage.put("a/b.jpg", b"hello", "image/jpeg")
    assert (info.key, info.size) == ("a/b.jpg", 5)
    assert await storage.get("a/b.jpg") == b"hello"
    head = await storage.head("a/b.jpg")
    assert (head.key, head.size, head.etag) == ("a/b.jpg", 5, info.etag)
    assert abs(head.modified - time.time()) < 60


async def test_overwrite_changes_etag(storage: Storage) -> None:
    first = await storage.put("k", b"x" * 10)
    second = await storage.put("k", b"y" * 10)
    assert first.etag != second.etag
    assert (await storage.head("k")).etag == second.etag
    assert await storage.get("k") == b"y" * 10
    third = await storage.put("k", b"z" * 10, sweep=True)  # as a pipeline writes
    assert third.etag != second.etag and await storage.get("k") == b"z" * 10


async def test_get_if_match_reads_only_the_version_written(storage: Storage) -> None:
    first = await storage.put("v/k", b"first")
    assert storage.blocking.get_if_match("v/k", first.etag) == b"first"
    second = await storage.put("v/k", b"other")  # the same size, written again
    assert storage.blocking.get_if_match("v/k", first.etag) is None
    assert storage.blocking.get_if_match("v/k", second.etag) == b"other"
    await storage.delete("v/k")
    assert storage.blocking.get_if_match("v/k", second.etag) is None
    assert storage.blocking.get_if_match("v/none", second.etag) is None


async def test_missing_key(storage: Storage) -> None:
    for call in (storage.get, storage.head):
        with pytest.raises(NotFound) as err:
            await call("no/such/key")
        assert err.value.code == "not_found"
    await storage.delete("no/such/key")


async def test_delete(storage: Storage) -> None:
    await storage.put("gone", b"1")
    await storage.delete("gone")
    with pytest.raises(NotFound):
        await storage.get("gone")
    assert await keys(storage) == set()


async def test_exists_and_head_ask_without_reading(storage: Storage) -> None:
    assert exists(storage.blocking, "e/k") is False
    info = await storage.put("e/k", b"1")
    assert exists(storage.blocking, "e/k") is True
    assert storage.blocking.head("e/k") == await storage.head("e/k")
    assert storage.blocking.head("e/k").etag == info.etag
    assert exists(storage.blocking, "e") is False  # a prefix (a folder, locally) is no object
    await storage.delete("e/k")
    assert exists(storage.blocking, "e/k") is False
    for missing in ("e/k", "e"):
        with pytest.raises(NotFound):
            storage.blocking.head(missing)
    with pytest.raises(BadRequest):
        exists(storage.blocking, "../escape")


async def test_list_and_prefix(storage: Storage) -> None:
    for key in ["a/1", "a/2", "a/b/3", "ab/4", "b"]:
        await storage.put(key, key.encode())
    assert await keys(storage) == {"a/1", "a/2", "a/b/3", "ab/4", "b"}
    assert await keys(storage, "a/") == {"a/1", "a/2", "a/b/3"}
    assert await keys(storage, "a") == {"a/1", "a/2", "a/b/3", "ab/4"}
    assert await keys(storage, "a/b") == {"a/b/3"}
    assert await keys(storage, "ab") == {"ab/4"}
    assert await keys(storage, "zz/") == set()
    sizes = {info.key: info.size async for info in storage.list("a/")}
    assert sizes == {"a/1": 3, "a/2": 3, "a/b/3": 5}


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys(storage: Storage, key: str) -> None:
    calls = [storage.get(key), storage.head(key), storage.put(key, b"1"), storage.delete(key),
             storage.put_file(key, Path(__file__))]
    for call in calls:
        with pytest.raises(BadRequest) as err:
            await call
        assert err.value.code == "bad_key"


@pytest.mark.parametrize("key", NEVER_WRITTEN)
async def test_keys_local_storage_cannot_write_safely_are_never_written(storage: Storage,
                                                                        key: str) -> None:
    """Named as a write under way (listing would never show them, a delete could take
    them for a writer's leftover), or with a segment too long for its temp name; one
    written before (by an earlier version) is still read and deleted."""
    for call in (storage.put(key, b"1"), storage.put_file(key, Path(__file__))):
        with pytest.raises(BadRequest) as err:
            await call
        assert err.value.code == "bad_key"
    with pytest.raises(NotFound):
        await storage.get(key)
    await storage.delete(key)


@pytest.mark.parametrize("prefix", ["../", "/abs/", "a//", "a/../"])
async def test_bad_list_prefix(storage: Storage, prefix: str) -> None:
    with pytest.raises(BadRequest) as err:
        await keys(storage, prefix)
    assert err.value.code == "bad_key"


def _break_writes(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the backend's final write step fail (the rename, or the S3 PUT)."""
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    def fail_s3(*args: object, **kwargs: object) -> None:
        raise GenericError("Generic S3 error: injected")

    async def fail_async(*args: object, **kwargs: object) -> None:
        fail_s3()

    if is_local(storage):
        monkeypatch.setattr(os, "replace", fail)
    else:
        monkeypatch.setattr(object_module.obstore, "put_async", fail_async)
        monkeypatch.setattr(object_module.obstore, "put", fail_s3)


async def test_failed_write_keeps_old_object(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    await storage.put("k", b"old")

    _break_writes(storage, monkeypatch)
    with pytest.raises(StorageError):
        await storage.put("k", b"new content")
    monkeypatch.undo()
    assert await storage.get("k") == b"old"
    assert await keys(storage) == {"k"}
    if is_local(storage):
        assert os.listdir(storage.root) == ["k"]


async def test_large_object(storage: Storage) -> None:
    data = os.urandom(12 * 1024 * 1024)
    info = await storage.put("big/blob", data)
    assert info.size == len(data)
    assert await storage.get("big/blob") == data
    assert (await storage.head("big/blob")).size == len(data)


async def test_ping(storage: Storage) -> None:
    await storage.ping()


@pytest.mark.parametrize("size", [0, 5, 12 * 1024 * 1024])  # the largest goes in parts
async def test_put_file_streams_a_local_file(storage: Storage, tmp_path: Path, size: int) -> None:
    source = tmp_path / "source.bin"
    data = os.urandom(size)
    source.write_bytes(data)
    info = await storage.put_file("files/a.bin", source, "application/octet-stream")
    assert (info.key, info.size) == ("files/a.bin", size)
    assert await storage.get("files/a.bin") == data
    assert (await storage.head("files/a.bin")).etag == info.etag
    assert storage.blocking.get_if_match("files/a.bin", info.etag) == data
    assert source.read_bytes() == data  # the source file is left in place


async def test_put_file_may_take_the_file_over(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "upload.part"
    source.write_bytes(b"received bytes")
    await storage.put("k", b"old")
    info = await storage.put_file("k", source, "image/jpeg", move=True)
    assert await storage.get("k") == b"received bytes"
    assert (await storage.head("k")).etag == info.etag
    assert storage.blocking.get_if_match("k", info.etag) == b"received bytes"
    if is_local(storage):  # renamed into place, not written again
        assert not source.exists()


async def test_put_file_errors(storage: Storage, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BadRequest):
        await storage.put_file("../x", tmp_path / "missing")
    with pytest.raises(StorageError):
        await storage.put_file("k", tmp_path / "missing")
    await storage.put("k", b"old")
    source = tmp_path / "new.bin"
    source.write_bytes(b"new content")

    _break_writes(storage, monkeypatch)
    with pytest.raises(StorageError):
        await storage.put_file("k", source)
    monkeypatch.undo()
    assert await storage.get("k") == b"old"
    assert await keys(storage) == {"k"}


# Backend-specific extras.


async def test_local_move_across_filesystems_copies(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A file on another filesystem than the storage root cannot be renamed into place:
    it is copied as any other (and the object's etag changes, as on any write)."""
    storage = LocalStorage(tmp_path / "root")
    source = tmp_path / "upload.part"
    source.write_bytes(b"same")
    first = await storage.put("k", b"same")
    replace = os.replace

    def across(src, dst):
        if Path(src) == source:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", across)
    info = await storage.put_file("k", source, move=True)
    assert await storage.get("k") == b"same" and info.etag != first.etag


async def test_local_same_size_rewrite_changes_etag(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    etags = {(await storage.put("k", b"same")).etag for _ in range(20)}
    assert len(etags) == 20


async def test_local_list_skips_temp_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    await storage.put("d/k", b"1")
    (tmp_path / "d" / f".k.{'0' * 32}.tmp").write_bytes(b"partial")
    assert await keys(storage) == {"d/k"}


@pytest.mark.parametrize("blocking", [False, True])
async def test_local_put_sweeps_only_temp_files_of_its_key_left_behind(tmp_path: Path,
                                                                       blocking: bool) -> None:
    """A writer of this place that is gone left its file behind at once; one of another
    place (a container or host sharing the folder), or of an earlier version's name, once
    nobody wrote it for an hour. A live writer's, and another key's, stay."""
    storage = LocalStorage(tmp_path)
    storage = ThroughBlocking(storage) if blocking else storage
    await storage.put("d/k", b"done")
    left = _leave_temp_files(tmp_path / "d")
    await storage.put("d/k", b"again")  # no sweep unless asked
    assert len(list((tmp_path / "d").iterdir())) == 6
    await storage.put("d/k", b"swept", sweep=True)
    assert _names(tmp_path / "d") == sorted([*left["kept"], *left["aging"], "k"])
    _age(*(tmp_path / "d" / name for name in left["aging"]))
    await storage.put("d/k", b"swept", sweep=True)
    assert _names(tmp_path / "d") == sorted([*left["kept"], "k"])
    assert await storage.get("d/k") == b"swept"
    await storage.put("never/written", b"new", sweep=True)  # a new directory: nothing to do
    assert await storage.get("never/written") == b"new"


@pytest.mark.parametrize("blocking", [False, True])
async def test_local_delete_sweeps_temp_files_of_its_key_left_behind(tmp_path: Path,
                                                                     blocking: bool) -> None:
    """A worker killed while writing a key left its temp file, and may never write the key
    again: deleting the key takes it too, but not a live writer's nor another key's."""
    storage = LocalStorage(tmp_path)
    storage = ThroughBlocking(storage) if blocking else storage
    await storage.put("d/other", b"kept")
    left = _leave_temp_files(tmp_path / "d")
    await storage.delete("d/k")  # never stored: its leftovers go all the same
    assert _names(tmp_path / "d") == sorted([*left["kept"], *left["aging"], "other"])
    await storage.delete("gone/k")  # no directory: nothing to do


@pytest.mark.parametrize("blocking", [False, True])
async def test_local_delete_removes_folders_left_empty(tmp_path: Path, blocking: bool) -> None:
    """As on S3, a folder lasts while it holds objects: deleting the last one removes its
    folders up to the root, with the temp files writers left behind there; it stops at a
    folder that holds an object, a live writer's temp file, or a recent one whose writer
    this process cannot see. A write makes the folders again."""
    storage = LocalStorage(tmp_path)
    storage = ThroughBlocking(storage) if blocking else storage
    for key in ("a/b/c/k", "a/b/c/other", "a/kept", "live/k", "recent/k", "solo/k"):
        await storage.put(key, b"x")
    folder, dead = tmp_path / "a" / "b" / "c", _finished_pid()
    cut = folder / _temp("never", dead, "6")  # no such object
    cut.write_bytes(b"cut short")
    elsewhere = folder / _temp("never", dead, "7", place="0badcafe")
    elsewhere.write_bytes(b"another container's?")
    (tmp_path / "live" / _temp("j", os.getpid(), "4")).write_bytes(b"being written")
    (tmp_path / "recent" / _temp("j", dead, "5", place="0badcafe")).write_bytes(b"?")
    await storage.delete("a/b/c/k")
    await storage.delete("a/b/c/other")  # a recent temp file from elsewhere keeps it
    assert _names(folder) == sorted([cut.name, elsewhere.name])
    await storage.put("a/b/c/other", b"x")
    _age(elsewhere)
    await storage.delete("a/b/c/other")  # now it is left over
    assert _names(tmp_path) == ["a", "live", "recent", "solo"]
    assert _names(tmp_path / "a") == ["kept"]
    for key in ("live/k", "recent/k", "solo/k"):
        await storage.delete(key)
    assert _names(tmp_path) == ["a", "live", "recent"]
    await storage.put("a/b/c/k", b"again")
    assert await keys(storage) == {"a/b/c/k", "a/kept"}


async def test_sweep_takes_what_no_object_holds(storage: Storage, tmp_path: Path) -> None:
    """Local disk: temp files left behind under the folder go, with the folders then
    empty, at any depth; objects, live writers' files and recent foreign ones stay. An
    object store has nothing to sweep; both check the folder like a key."""
    await storage.put("keep/obj", b"x")
    await storage.sweep("nothing/here")  # no such folder: nothing to do
    with pytest.raises(BadRequest):
        await storage.sweep("../out")
    if not is_local(storage):
        assert await keys(storage) == {"keep/obj"}
        return
    root, dead = storage.root, _finished_pid()
    for folder in ("f/a/b", "f/c", "f/d", "keep"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "f/a/b" / _temp("x", dead, "1")).write_bytes(b"cut short")
    (root / "f/c" / _temp("y", os.getpid(), "2")).write_bytes(b"being written")
    (root / "f/d" / _temp("z", dead, "3", place="0badcafe")).write_bytes(b"recent, elsewhere")
    (root / "keep" / _temp("w", dead, "4")).write_bytes(b"cut short, beside an object")
    await storage.sweep("f")
    await storage.sweep("keep")
    assert _names(root / "f") == ["c", "d"] and _names(root / "keep") == ["obj"]


async def test_local_writes_outlast_folders_pruned_under_them(tmp_path: Path,
                                                              monkeypatch) -> None:
    """A write whose folder (or a parent of it) a delete removes between its own steps
    makes it again, as often as that happens."""
    storage = LocalStorage(tmp_path)
    real_makedirs, pruned = os.makedirs, []

    def makedirs(path, *args, **kwargs):  # a prune after every step of the write's mkdir
        if not pruned:  # the first time, a parent pruned between the steps of makedirs
            pruned.append(path)
            raise FileNotFoundError(errno.ENOENT, "pruned meanwhile", str(path))
        real_makedirs(path, *args, **kwargs)
        if len(pruned) < local.FOLDER_TRIES - 1:
            pruned.append(path)
            os.rmdir(path)

    monkeypatch.setattr(local.os, "makedirs", makedirs)
    await storage.put("a/b/k", b"landed")
    assert await storage.get("a/b/k") == b"landed" and len(pruned) == local.FOLDER_TRIES - 1


def _temp(key: str, pid: int, digit: str, place: str | None = None) -> str:
    """The name of a temp file of `key` by writer `pid` of `place` (default: this one)."""
    return f".{key}.{pid}-{place or temps.place()}.{digit * 32}.tmp"


def _leave_temp_files(folder: Path) -> dict[str, list[str]]:
    """Temp files in `folder`, by what a sweep of key `k` does with them: `gone` (this
    place's writer gone), `kept` (a live writer's; key `other`'s) and `aging` (a writer's
    of another place, a name without a place: left over once untouched for an hour)."""
    dead = _finished_pid()
    left = {"gone": [_temp("k", dead, "1")],
            "kept": [_temp("k", os.getpid(), "2"), _temp("other", dead, "3")],
            "aging": [_temp("k", dead, "4", place="0badcafe"), f".k.{dead}.{'5' * 32}.tmp"]}
    for name in (n for names in left.values() for n in names):
        (folder / name).write_bytes(b"partial")
    return left


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _age(*paths: Path) -> None:
    """Make `paths` untouched for longer than a write may take."""
    long_ago = time.time() - 2 * temps.STALE_S
    for path in paths:
        os.utime(path, (long_ago, long_ago))


def _finished_pid() -> int:
    """The id of a process that has ended (and was reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


async def test_local_symlinks_escaping_root_are_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (root / "dir").symlink_to(outside)
    (root / "file").symlink_to(outside / "secret")
    storage = LocalStorage(root)
    for call in [storage.get("dir/secret"), storage.get("file"), storage.put("dir/x", b"1")]:
        with pytest.raises(BadRequest) as err:
            await call
        assert err.value.code == "bad_key"
    with pytest.raises(BadRequest):
        await keys(storage, "dir/")
    assert await keys(storage) == set()
    assert os.listdir(outside) == ["secret"]
    await storage.put("sub/y", b"1")
    await storage.put("sub/y", b"1")  # "sub" is a checked folder now
    (root / "sub" / "dir").symlink_to(outside)
    with pytest.raises(BadRequest):  # a link in it is still resolved
        await storage.put("sub/dir/x", b"1")
    await storage.put("sub/new/x", b"2")
    assert (root / "sub" / "new" / "x").read_bytes() == b"2"
    shutil.rmtree(root / "sub")  # a checked folder replaced by a link since
    (root / "sub").symlink_to(outside)
    with pytest.raises(BadRequest):  # its new folders are resolved again
        await storage.put("sub/b/y", b"1")
    await storage.put("file", b"mine")  # a link at the key itself is replaced, not followed
    assert not (root / "file").is_symlink() and (root / "file").read_bytes() == b"mine"
    assert (outside / "secret").read_bytes() == b"secret"
    assert os.listdir(outside) == ["secret"]


async def test_local_ping_fails_without_root(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        await LocalStorage(tmp_path / "missing").ping()


MOTO_BEGAN = datetime(2010, 11, 10, 20, 48, 33, tzinfo=timezone.utc)  # every upload's, in moto


def _begin_upload(settings: S3, key: str) -> str:
    """A multipart upload of `key` (bucket-wide: no prefix added) with one part, never
    completed, as a process killed mid-put leaves it; its id."""
    client = boto3.client("s3", endpoint_url=settings.endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    upload = client.create_multipart_upload(Bucket=settings.bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=settings.bucket, Key=key, UploadId=upload, PartNumber=1,
                       Body=b"x" * 1024)
    return upload


def _uploads(settings: S3) -> set[str]:
    client = boto3.client("s3", endpoint_url=settings.endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    return {u["Key"] for u in client.list_multipart_uploads(Bucket=settings.bucket)
            .get("Uploads", [])}


@pytest.mark.parametrize("prefix", ["dr", "/dr/"])
async def test_stale_multipart_uploads_are_aborted_under_the_prefix_only(s3_settings: S3,
                                                                         prefix: str) -> None:
    """Uploads a killed process left under darkroom's prefix go once begun before the
    cutoff; one begun at the cutoff, and other applications' beside the prefix (a key
    that merely starts with its letters among them), stay."""
    storage = ObjectStorage(s3_settings.model_copy(update={"prefix": prefix}),
                            retry_config=SHORT_RETRY)
    for key in ("dr/photos/big.jpg", "dr/_renditions/x/y.webp", "drafts/big.jpg",
                "other/big.jpg"):
        _begin_upload(s3_settings, key)
    assert await storage.abort_stale_uploads(MOTO_BEGAN) == 0  # none begun before
    assert len(_uploads(s3_settings)) == 4
    assert await storage.abort_stale_uploads(MOTO_BEGAN + timedelta(seconds=1)) == 2
    assert _uploads(s3_settings) == {"drafts/big.jpg", "other/big.jpg"}
    assert await storage.abort_stale_uploads(utcnow()) == 0


async def test_an_abort_stops_between_uploads_when_asked(s3_settings: S3) -> None:
    for key in ("a.jpg", "b.jpg", "c.jpg"):
        _begin_upload(s3_settings, key)
    asked = iter([True, False])
    storage = ObjectStorage(s3_settings)
    assert await storage.abort_stale_uploads(utcnow(), lambda: next(asked, False)) == 1
    assert len(_uploads(s3_settings)) == 2


async def test_no_upload_is_aborted_over_plain_http_unless_allowed(s3_settings: S3) -> None:
    _begin_upload(s3_settings, "big.jpg")
    storage = ObjectStorage(s3_settings.model_copy(update={"allow_http": False}))
    with pytest.raises(StorageError, match="allow_http"):
        await storage.abort_stale_uploads(utcnow())
    assert _uploads(s3_settings) == {"big.jpg"}


async def test_local_storage_keeps_no_uploads_apart(tmp_path: Path) -> None:
    assert await LocalStorage(tmp_path).abort_stale_uploads(utcnow()) == 0


async def test_s3_unreachable_is_storage_error(s3_settings: S3) -> None:
    settings = s3_settings.model_copy(update={"endpoint": "http://127.0.0.1:1"})
    storage = ObjectStorage(settings, retry_config=SHORT_RETRY)
    for call in [storage.get("k"), storage.head("k"), storage.put("k", b"1"), storage.ping(),
                 storage.abort_stale_uploads(utcnow())]:
        with pytest.raises(StorageError) as err:
            await call
        assert err.value.code == "storage_unavailable"


async def test_s3_missing_bucket_fails_ping(s3_settings: S3) -> None:
    settings = s3_settings.model_copy(update={"bucket": "no-such-bucket"})
    with pytest.raises(StorageError):
        await ObjectStorage(settings, retry_config=SHORT_RETRY).ping()


def test_open_storage_picks_the_backend(tmp_path: Path, s3_settings: S3) -> None:
    local = open_storage(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalStorage) and (tmp_path / "storage").is_dir()
    assert isinstance(open_storage(Settings(storage="s3", s3=s3_settings)), ObjectStorage)
    with pytest.raises(DarkroomError) as err:
        open_storage(Settings(storage="s3"))
    assert err.value.code == "bad_config"
