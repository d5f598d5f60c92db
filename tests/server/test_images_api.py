"""`/v1/images` over HTTP, on SQLite and on PostgreSQL: upload (raw and multipart), limits,
idempotency, listing, detail, replacement and deletion, with the outbox checked."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from darkroom.catalog import intents, repository
from darkroom.errors import CatalogError
from darkroom.server.renderer import cache_folder
from darkroom.server.staging import StagedFile, sweep_parts
from darkroom.storage import temps
from darkroom.storage.temps import STALE_S

from catalog.databases import count_rows, database_url, pg_url, rows  # noqa: F401
from .helpers import (
    ALPHA_PNG, CORPUS, OK_FILES, PHOTO, REJECT_FILES, assert_error, files_under, image_size,
    left_in_tmp, settings_for,
)

SMALL_JPEG = min((f for f in OK_FILES if f["container"] == "jpeg"), key=lambda f: f["bytes"])


@pytest.fixture
def api(make_client, database_url):  # noqa: F811
    return make_client(database_url=database_url)


def raw(client, entry: dict, key: str | None = None, **headers):
    params = {"key": key} if key else {}
    return client.post("/v1/images", params=params, content=(CORPUS / entry["path"]).read_bytes(),
                       headers={"content-type": "application/octet-stream", **headers})


def form(client, entry: dict, key: str, tags: str = ""):
    data = {"key": key, **({"tags": tags} if tags else {})}
    files = {"file": ("upload.bin", (CORPUS / entry["path"]).read_bytes(), "image/png")}
    return client.post("/v1/images", data=data, files=files)


def nothing_left(client, key: str) -> None:
    url = client.settings.database_url
    assert not (client.settings.storage_dir / key).exists()
    assert [count_rows(url, t) for t in ("images", "image_versions", "outbox")] == [0, 0, 0]
    assert left_in_tmp(client.settings) == []


def events(client) -> list[tuple[str, str, dict]]:
    found = rows(client.settings.database_url,
                 "SELECT id, type, payload FROM outbox ORDER BY created_at, type")
    return [(r[0], r[1], r[2] if isinstance(r[2], dict) else json.loads(r[2])) for r in found]


def test_every_accepted_file_uploads_raw_and_multipart(api):
    for entry in OK_FILES:
        for style, send in (("raw", raw), ("form", form)):
            key = f"{style}/{entry['path']}"
            response = send(api, entry, key)
            assert response.status_code == 201, (key, response.text)
            body = response.json()
            assert response.headers["location"] == f"/v1/images/{body['id']}"
            assert (body["key"], body["width"], body["height"]) == (
                key, entry["width"], entry["height"]), key
            assert (body["sha256"], body["bytes"]) == (entry["sha256"], entry["bytes"])
            assert (api.settings.storage_dir / key).read_bytes() == (
                CORPUS / entry["path"]).read_bytes()
            assert api.get(f"/v1/images/{body['id']}").json() == body
    assert count_rows(api.settings.database_url, "images") == 2 * len(OK_FILES)
    assert left_in_tmp(api.settings) == []
    # moved into storage from the upload's own file, with any new file's mode
    fresh = api.settings.data_dir / "fresh"
    fresh.write_bytes(b"")
    mode = fresh.stat().st_mode & 0o777
    assert {(api.settings.storage_dir / f"raw/{e['path']}").stat().st_mode & 0o777
            for e in OK_FILES} == {mode}


@pytest.mark.parametrize("entry", REJECT_FILES, ids=lambda e: e["path"])
def test_refused_files_leave_nothing(make_client, entry):
    client = make_client()
    for send in (raw, form):
        response = send(client, entry, "refused/x")
        assert 400 <= response.status_code < 500, response.text
        assert_error(response, response.status_code)
        nothing_left(client, "refused/x")


def test_an_oversize_body_is_refused_mid_stream(make_client, database_url):  # noqa: F811
    client = make_client(database_url=database_url, limits={"max_source_bytes": 4096})
    data = (CORPUS / PHOTO["path"]).read_bytes()

    def chunks():  # no Content-Length: the server only learns the size by reading
        for i in range(0, len(data), 1024):
            yield data[i:i + 1024]

    response = client.post("/v1/images", params={"key": "big.jpg"}, content=chunks(),
                           headers={"content-type": "image/jpeg"})
    assert_error(response, 413, "source_too_large")
    nothing_left(client, "big.jpg")
    response = form(client, PHOTO, "big.jpg")
    assert_error(response, 413, "source_too_large")
    nothing_left(client, "big.jpg")


def test_idempotency_key_replays_the_first_answer(api):
    first = raw(api, SMALL_JPEG, "idem.jpg", **{"Idempotency-Key": "k-1"})
    again = raw(api, SMALL_JPEG, "idem.jpg", **{"Idempotency-Key": "k-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.json() == first.json()
    assert_error(raw(api, ALPHA_PNG, "idem.jpg", **{"Idempotency-Key": "k-1"}), 409,
                 "idempotency_conflict")
    assert_error(raw(api, SMALL_JPEG, "idem.jpg"), 409, "image_exists")
    assert_error(raw(api, SMALL_JPEG, "x.jpg", **{"Idempotency-Key": "k" * 300}), 400,
                 "bad_idempotency_key")
    url = api.settings.database_url
    assert (count_rows(url, "images"), count_rows(url, "outbox")) == (1, 1)


def test_list_filters_and_cursor_pages(api):
    uploads = [("a/1.jpg", PHOTO, "red"), ("a/2.png", ALPHA_PNG, "red,blue"),
               ("a/3.jpg", SMALL_JPEG, ""), ("b/4.png", ALPHA_PNG, "blue"),
               ("a%_/5.jpg", PHOTO, "")]
    for key, entry, tags in uploads:
        assert form(api, entry, key, tags).status_code == 201
    seen, cursor = [], None
    while True:
        page = api.get("/v1/images", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200 and len(page.json()["items"]) <= 2
        seen += [item["key"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(k for k, _, _ in uploads)

    def keys(**params) -> list[str]:
        response = api.get("/v1/images", params=params)
        assert response.status_code == 200, response.text
        return [item["key"] for item in response.json()["items"]]

    assert keys(prefix="a/") == ["a/1.jpg", "a/2.png", "a/3.jpg"]
    assert keys(prefix="a%_") == ["a%_/5.jpg"]  # LIKE wildcards are plain characters
    assert keys(format="png") == ["a/2.png", "b/4.png"]
    assert keys(tag="red") == ["a/1.jpg", "a/2.png"]
    assert keys(status="ready", prefix="b") == ["b/4.png"]
    assert keys(created_after="2999-01-01T00:00:00Z") == []
    assert len(keys(created_before="2999-01-01T00:00:00Z")) == 5
    assert_error(api.get("/v1/images", params={"cursor": "nonsense"}), 400, "bad_cursor")
    assert_error(api.get("/v1/images", params={"limit": 500}), 400, "bad_param")
    assert_error(api.get("/v1/images", params={"format": "pdf"}), 400, "bad_param")


def test_detail_descriptors_are_present_and_stable(api):
    first = form(api, PHOTO, "one.jpg", "x").json()
    second = raw(api, PHOTO, "two.jpg").json()
    for field in ("blurhash", "phash", "colours", "exif", "width", "height", "format"):
        assert first[field] == second[field], field
    assert len(first["blurhash"]) == 28 and len(first["phash"]) == 16 and first["colours"]
    assert (first["renditions"], first["jobs"], first["tags"]) == ([], [], ["x"])
    assert first["mime"] == "image/jpeg" and first["pages"] == 1 and first["version"] == 1
    assert_error(api.get("/v1/images/" + "0" * 32), 404, "image_not_found")
    assert_error(api.get("/v1/images/nothex"), 400, "bad_param")


def test_replace_serves_the_new_bytes(api):
    image = raw(api, PHOTO, "swap/pic").json()
    before = api.get("/img/swap/pic", params={"w": 60})
    assert before.status_code == 200
    assert image_size(before.content)[1] == round(60 * PHOTO["height"] / PHOTO["width"])
    folder = api.settings.cache_dir / cache_folder("swap/pic")
    assert files_under(folder)
    replaced = api.put(f"/v1/images/{image['id']}",
                       content=(CORPUS / ALPHA_PNG["path"]).read_bytes(),
                       headers={"content-type": "image/png"})
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    assert (body["id"], body["version"], body["format"]) == (image["id"], 2, "png")
    assert body["sha256"] == ALPHA_PNG["sha256"]
    assert files_under(folder) == []  # the old derivatives went with the old version
    after = api.get("/img/swap/pic", params={"w": 60})
    assert after.status_code == 200 and after.headers["etag"] != before.headers["etag"]
    assert image_size(after.content)[1] == round(60 * ALPHA_PNG["height"] / ALPHA_PNG["width"])
    assert [e[1] for e in events(api)] == ["image.uploaded", "image.replaced"]
    assert count_rows(api.settings.database_url, "image_versions") == 2
    assert_error(api.put("/v1/images/" + "0" * 32, content=b"x",
                         headers={"content-type": "image/png"}), 404, "image_not_found")


def test_delete_removes_object_rows_and_cache(api):
    image = raw(api, PHOTO, "gone.jpg").json()
    assert api.get("/img/gone.jpg", params={"w": 40}).status_code == 200
    assert api.delete(f"/v1/images/{image['id']}").status_code == 204
    assert not (api.settings.storage_dir / "gone.jpg").exists()
    assert files_under(api.settings.cache_dir / cache_folder("gone.jpg")) == []
    assert_error(api.get("/img/gone.jpg", params={"w": 40}), 404, "source_not_found")
    assert_error(api.get(f"/v1/images/{image['id']}"), 404, "image_not_found")
    assert_error(api.delete(f"/v1/images/{image['id']}"), 404, "image_not_found")
    kinds = [(e[1], e[2]["image_id"]) for e in events(api)]
    assert kinds == [("image.uploaded", image["id"]), ("image.deleted", image["id"])]
    assert count_rows(api.settings.database_url, "image_versions") == 0


def test_delete_sweeps_a_rendition_folder_no_object_held(api):
    """A worker killed writing an image's first rendition left only a temp file: deleting
    the image takes it and the folder too."""
    image = raw(api, PHOTO, "cut.jpg").json()
    folder = api.settings.storage_dir / "_renditions" / image["id"]
    folder.mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    (folder / f".r.webp.{gone.pid}-{temps.place()}.{'0' * 32}.tmp").write_bytes(b"cut")
    assert api.delete(f"/v1/images/{image['id']}").status_code == 204
    assert not (api.settings.storage_dir / "_renditions").exists()


def test_outbox_events_have_unique_ids_and_details(api):
    for i in range(3):
        raw(api, SMALL_JPEG, f"e/{i}.jpg")
    found = events(api)
    ids = [e[0] for e in found]
    assert len(set(ids)) == 3 and all(len(i) == 32 for i in ids)
    assert {e[2]["key"] for e in found} == {"e/0.jpg", "e/1.jpg", "e/2.jpg"}
    assert all(e[2]["sha256"] == SMALL_JPEG["sha256"] for e in found)


def test_a_failure_after_the_object_write_leaves_nothing(api, monkeypatch):
    def fail(*args, **kwargs):
        raise CatalogError("injected outbox failure")

    monkeypatch.setattr(repository, "add_event", fail)
    assert_error(raw(api, SMALL_JPEG, "half.jpg"), 503, "catalog_unavailable")
    nothing_left(api, "half.jpg")


def test_bad_upload_requests(client):
    assert_error(client.post("/v1/images", content=b"{}",
                             headers={"content-type": "application/json"}), 400, "bad_content_type")
    no_file = client.post("/v1/images", data={"key": "k"}, files={"other": ("a", b"1")})
    assert_error(no_file, 400, "bad_multipart")
    assert_error(client.post("/v1/images", data={"key": "k"},
                             files={"file": ("a", b"", "image/png")}), 415, "empty_source")
    assert_error(raw(client, PHOTO, "../escape"), 400, "bad_key")
    assert_error(client.post("/v1/images", params={"tags": "bad tag!"}, content=b"x",
                             headers={"content-type": "image/jpeg"}), 400, "bad_tag")
    assert left_in_tmp(client.settings) == []


def test_staged_uploads_nobody_holds_are_swept(tmp_path, capsys):
    """Swept: the file of a process killed mid-upload (its lock gone with it), and files
    no lock protects once untouched for an hour (an earlier version's; one whose maker
    died before locking it). Kept: an upload being received (its lock held, here by this
    very process), recent unprotected files, anything else. A file that cannot be swept
    is logged, not raised."""
    killed = subprocess.run([sys.executable, "-c", (
        "import os, sys; from pathlib import Path; from darkroom.server.staging import "
        "StagedFile; f = StagedFile(Path(sys.argv[1]), 100); f.write(b'cut'); "
        "f.file.flush(); os.kill(os.getpid(), 9)"), str(tmp_path)])
    assert killed.returncode == -9
    (dead,) = tmp_path.glob("staged-*.part")
    receiving = StagedFile(tmp_path, 100)
    receiving.write(b"arriving")
    unguarded = {name: tmp_path / name for name in (
        f"upload-{'0' * 32}.part", f"staged-{'1' * 32}.new")}
    recent = {name: tmp_path / name for name in (
        f"upload-{'2' * 32}.part", f"staged-{'3' * 32}.new")}
    for path in (*unguarded.values(), *recent.values(), tmp_path / "notes.txt"):
        path.write_bytes(b"partial")
    long_ago = time.time() - 2 * STALE_S
    for path in unguarded.values():
        os.utime(path, (long_ago, long_ago))
    (tmp_path / f"staged-{'4' * 32}.part").mkdir()  # cannot be opened as a file
    assert sweep_parts(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        receiving.path.name, *recent, "notes.txt", f"staged-{'4' * 32}.part"])
    assert not dead.exists()
    assert "staged_upload_not_swept" in capsys.readouterr().out
    receiving.discard()
    assert not receiving.path.exists()
    assert sweep_parts(tmp_path / "missing") == 0


def test_a_server_that_starts_settles_uploads_killed_before_their_commit(make_client, tmp_path):
    """An intent no process holds, of an upload that stored its object and its head start
    and was killed before its commit: the next server undoes both before it serves."""
    settings = settings_for(tmp_path / "data")
    data = (CORPUS / SMALL_JPEG["path"]).read_bytes()
    entry = intents.Entry("orphan.jpg", "f" * 32, hashlib.sha256(data).hexdigest())
    head_start = settings.storage_dir / "_renditions" / entry.image_id / "x-0.webp"
    head_start.parent.mkdir(parents=True)
    head_start.write_bytes(b"its head start")
    (settings.storage_dir / entry.key).write_bytes(data)
    intents.intend(settings.data_dir / "tmp", entry).file.close()  # its process is gone

    client = make_client(settings=settings)
    assert not (settings.storage_dir / entry.key).exists()
    assert not (settings.storage_dir / "_renditions").exists()
    assert left_in_tmp(settings) == []
    assert raw(client, SMALL_JPEG, entry.key).status_code == 201  # the key is free


def test_an_upload_whose_intent_cannot_be_written_leaves_nothing(client, monkeypatch):
    """Without its intent on disk (the folder full, read-only), an upload is refused with
    a 502 before it stores anything."""
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(intents, "_sync_folder", full)
    assert_error(raw(client, SMALL_JPEG, "refused.jpg"), 502, "storage_unavailable")
    nothing_left(client, "refused.jpg")


def test_an_upload_that_cannot_be_staged_leaves_nothing(client, monkeypatch):
    """Without a working flock (not a local filesystem), an upload is refused, 502."""
    import fcntl

    def refuse(*args):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    assert_error(raw(client, PHOTO, "a.jpg"), 502, "storage_unavailable")
    assert left_in_tmp(client.settings) == []


def test_multipart_without_a_file_part(client):
    response = client.post("/v1/images", files={"key": (None, "k")})
    assert_error(response, 400, "missing_file")


def test_generated_keys_name_the_sniffed_format(client):
    body = raw(client, ALPHA_PNG).json()
    assert body["key"].endswith(".png") and body["format"] == "png"


def test_catalog_routes_need_the_bearer_key(make_client):
    client = make_client(signing_keys="secret")
    assert_error(client.get("/v1/images"), 401, "token_required")
    assert_error(raw(client, SMALL_JPEG, "k.jpg"), 401, "token_required")
    ok = raw(client, SMALL_JPEG, "k.jpg", Authorization="Bearer secret")
    assert ok.status_code == 201
    assert client.get("/v1/images", headers={"Authorization": "Bearer secret"}).json()[
        "items"][0]["sha256"] == hashlib.sha256((CORPUS / SMALL_JPEG["path"]).read_bytes()
                                                 ).hexdigest()


def test_readyz_checks_the_catalog(client):
    assert client.get("/readyz").json() == {"status": "ready"}
