"""Head starts: an upload whose jobs begin with a renditions step makes the one that loads
the source smallest, from the decode its descriptors need anyway; the step finds it made.
Nothing of it is left when the upload fails or the image is refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from darkroom.catalog import repository
from darkroom.config import Settings
from darkroom.errors import CatalogError
from darkroom.server.app import create_app

from corpus_files import CORPUS, REJECT_FILES
from server.helpers import PHOTO, TestClient

RAW = {"content-type": "application/octet-stream"}
SIZES = {"name": "sizes", "type": "renditions", "params": {"renditions": {
    "large": "w=400&fm=jpeg", "thumb": "w=64&h=64&fit=cover&fm=png", "card": "w=200"}}}


@pytest.fixture
def client(tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data", allow_unsigned=True, access_log=False,
                        pipelines={"poll_s": 0.05})
    with TestClient(create_app(settings)) as client:
        client.settings = settings
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
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_the_upload_makes_the_smallest_first_rendition_and_the_step_finds_it(client):
    _pipeline(client, [SIZES, {"name": "tell", "type": "notify"}])
    upload = client.post("/v1/images?key=a.jpg", headers=RAW,
                         content=(CORPUS / PHOTO["path"]).read_bytes()).json()
    (made,) = [k for k in _stored(client) if k.startswith("_renditions/")]
    job = _finished(client, upload["jobs"][0]["id"])
    assert job["status"] == "succeeded"
    output = job["steps"][0]["output"]
    assert made == output["thumb"]["key"] and not output["thumb"]["written"]
    assert output["large"]["written"] and output["card"]["written"]
    assert (output["thumb"]["width"], output["thumb"]["height"]) == (64, 64)
    detail = client.get(f"/v1/images/{upload['id']}").json()
    assert sorted(r["name"] for r in detail["renditions"]) == ["card", "large", "thumb"]
    assert len([k for k in _stored(client) if k.startswith("_renditions/")]) == 3
    assert detail["blurhash"] == upload["blurhash"] and len(upload["phash"]) == 16


def test_no_head_start_unless_the_first_step_makes_renditions(client):
    _pipeline(client, [{"name": "meta", "type": "metadata"}, SIZES])
    upload = client.post("/v1/images?key=a.jpg", headers=RAW,
                         content=(CORPUS / PHOTO["path"]).read_bytes()).json()
    assert _stored(client) == ["a.jpg"]
    job = _finished(client, upload["jobs"][0]["id"])
    assert all(r["written"] for r in job["steps"][1]["output"].values())


def test_a_failed_upload_leaves_no_head_start(client, monkeypatch):
    _pipeline(client, [SIZES])

    def fail(*args, **kwargs):
        raise CatalogError("injected failure")

    monkeypatch.setattr(repository, "detail", fail)  # after the rendition was stored
    response = client.post("/v1/images?key=a.jpg", headers=RAW,
                           content=(CORPUS / PHOTO["path"]).read_bytes())
    assert response.status_code == 503, response.text
    assert _stored(client) == []
    monkeypatch.undo()
    assert client.get("/v1/images").json()["items"] == []


@pytest.mark.parametrize("entry", [f for f in REJECT_FILES if "truncated" in f["traits"]],
                         ids=lambda e: e["path"])
def test_a_broken_image_is_refused_with_nothing_stored(client, entry):
    _pipeline(client, [SIZES])
    response = client.post("/v1/images?key=broken", headers=RAW,
                           content=(CORPUS / entry["path"]).read_bytes())
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "corrupt_image"
    assert _stored(client) == []
