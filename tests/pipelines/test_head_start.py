"""Head starts: an upload whose jobs begin with a renditions step makes the one that loads
the source smallest, from the decode its descriptors need anyway; the step finds it made.
Nothing of it is stored when the upload fails or the image is refused, and a head start
that cannot be stored is the step's to make."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from darkroom.catalog import repository
from darkroom.config import Settings
from darkroom.errors import CatalogError, StorageError
from darkroom.pipelines.steps import HEAD_START_PIXELS
from darkroom.server.app import create_app
from darkroom.storage.local import LocalFiles

from corpus_files import CORPUS, REJECT_FILES
from server.helpers import PHOTO, ROTATED, TestClient

RAW = {"content-type": "application/octet-stream"}
SIZES = {"name": "sizes", "type": "renditions", "params": {"renditions": {
    "large": "w=400&fm=jpeg", "thumb": "w=64&h=64&fit=cover&fm=png", "card": "w=200"}}}


@contextmanager
def serving(tmp_path: Path, poll_s: float) -> Iterator[TestClient]:
    """A client of a server with an in-process worker polling every `poll_s`."""
    settings = Settings(data_dir=tmp_path / "data", allow_unsigned=True, access_log=False,
                        pipelines={"poll_s": poll_s})
    with TestClient(create_app(settings)) as client:
        client.settings = settings
        yield client


@pytest.fixture
def client(tmp_path: Path):
    with serving(tmp_path, 0.05) as client:
        yield client


def _pipeline(client, steps: list[dict]) -> None:
    response = client.put("/v1/pipelines/p", json={"steps": steps})
    assert response.status_code in (200, 201), response.text


def _finished(client, job_id: str) -> dict:
    for _ in range(1200):
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    pytest.fail(f"job {job_id} still {job['status']}")


def _stored(client) -> list[str]:
    root = client.settings.storage_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not p.name.endswith(".tmp"))


def _upload(client, key: str = "a.jpg"):
    return client.post(f"/v1/images?key={key}", headers=RAW,
                       content=(CORPUS / PHOTO["path"]).read_bytes())


def _hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def test_the_upload_makes_the_smallest_first_rendition_and_the_step_finds_it(client):
    plain = _upload(client, "before/a.jpg").json()  # no pipeline yet: described alone
    _pipeline(client, [SIZES, {"name": "tell", "type": "notify"}])
    upload = _upload(client).json()
    stored = _stored(client)  # the answer comes after the head start is stored
    job = _finished(client, upload["jobs"][0]["id"])
    assert job["status"] == "succeeded"
    output = job["steps"][0]["output"]
    assert output["thumb"]["key"] in stored and not output["thumb"]["written"]
    assert output["large"]["written"] and output["card"]["written"]
    assert (output["thumb"]["width"], output["thumb"]["height"]) == (64, 64)
    detail = client.get(f"/v1/images/{upload['id']}").json()
    assert sorted(r["name"] for r in detail["renditions"]) == ["card", "large", "thumb"]
    assert len([k for k in _stored(client) if k.startswith("_renditions/")]) == 3
    # descriptors from the thumb's decode (1/4 here), close to those of a 1/8 decode
    assert _hamming(upload["phash"], plain["phash"]) <= 6
    top, alone = (bytes.fromhex(c["colours"][0]["hex"][1:]) for c in (upload, plain))
    assert max(abs(a - b) for a, b in zip(top, alone)) <= 8
    assert (upload["width"], upload["exif"]) == (plain["width"], plain["exif"])


def test_no_head_start_unless_the_first_step_makes_renditions(client):
    _pipeline(client, [{"name": "meta", "type": "metadata"}, SIZES])
    upload = _upload(client).json()
    assert _stored(client) == ["a.jpg"]
    job = _finished(client, upload["jobs"][0]["id"])
    assert all(r["written"] for r in job["steps"][1]["output"].values())


def test_no_head_start_when_the_rendition_needs_the_source_past_the_cap(client):
    _pipeline(client, [{"name": "sizes", "type": "renditions",
                        "params": {"renditions": {"webp": "fm=webp"}}}])
    assert ROTATED["width"] * ROTATED["height"] > HEAD_START_PIXELS
    upload = client.post("/v1/images?key=a.jpg", headers=RAW,
                         content=(CORPUS / ROTATED["path"]).read_bytes()).json()
    assert _stored(client) == ["a.jpg"]
    job = _finished(client, upload["jobs"][0]["id"])
    assert job["steps"][0]["output"]["webp"]["written"]


def test_a_failed_upload_stores_no_head_start(client, monkeypatch):
    _pipeline(client, [SIZES])

    def fail(*args, **kwargs):
        raise CatalogError("injected failure")

    monkeypatch.setattr(repository, "detail", fail)  # after the jobs were fired
    response = _upload(client)
    assert response.status_code == 503, response.text
    assert _stored(client) == []
    monkeypatch.undo()
    assert client.get("/v1/images").json()["items"] == []
    assert _upload(client).status_code == 201  # the same upload has its head start
    assert len([k for k in _stored(client) if k.startswith("_renditions/")]) >= 1


def test_a_head_start_that_cannot_be_stored_is_left_to_the_step(client, monkeypatch):
    _pipeline(client, [SIZES])
    put, refused = LocalFiles.put, []

    def refuse(self, key, data, content_type=None, sweep=False):
        if key.startswith("_renditions/") and not sweep:
            refused.append(key)  # the upload's, not the worker's (its writes sweep)
            raise StorageError("injected storage failure")
        return put(self, key, data, content_type, sweep)

    monkeypatch.setattr(LocalFiles, "put", refuse)
    upload = _upload(client)
    assert upload.status_code == 201 and len(refused) == 1
    job = _finished(client, upload.json()["jobs"][0]["id"])
    assert job["status"] == "succeeded"
    assert all(r["written"] for r in job["steps"][0]["output"].values())


@pytest.mark.parametrize("entry", [f for f in REJECT_FILES if "truncated" in f["traits"]],
                         ids=lambda e: e["path"])
def test_a_broken_image_is_refused_with_nothing_stored(client, entry):
    _pipeline(client, [SIZES])
    response = client.post("/v1/images?key=broken", headers=RAW,
                           content=(CORPUS / entry["path"]).read_bytes())
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "corrupt_image"
    assert _stored(client) == []
