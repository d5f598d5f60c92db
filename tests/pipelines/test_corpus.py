"""Every corpus file through the upload API with a pipeline on: accepted files are
catalogued with their true sizes and their jobs make every rendition; refused files get a
4xx and leave no object, row, job or event."""

from __future__ import annotations

import time

from corpus_files import CORPUS, OK_FILES, REJECT_FILES
from server.helpers import image_size

from .test_runs import RAW, client  # noqa: F401  (the app with its in-process worker)

RENDITIONS = {"thumb": "w=96&fm=webp", "icon": "w=32&h=32&fit=cover&fm=png"}


def test_every_corpus_file_uploads_and_runs_or_is_refused(client):  # noqa: F811
    client.put("/v1/pipelines/all", json={"steps": [
        {"name": "meta", "type": "metadata"},
        {"name": "sizes", "type": "renditions", "params": {"renditions": RENDITIONS}},
        {"name": "tell", "type": "notify"}]}).raise_for_status()
    jobs = {}
    for entry in OK_FILES:
        response = client.post("/v1/images", params={"key": entry["path"]}, headers=RAW,
                               content=(CORPUS / entry["path"]).read_bytes())
        assert response.status_code == 201, (entry["path"], response.text)
        body = response.json()
        assert (body["width"], body["height"], body["bytes"]) == (
            entry["width"], entry["height"], entry["bytes"]), entry["path"]
        jobs[body["jobs"][0]["id"]] = entry["path"]
    for entry in REJECT_FILES:
        response = client.post("/v1/images", params={"key": f"refused/{entry['path']}"},
                               headers=RAW, content=(CORPUS / entry["path"]).read_bytes())
        assert 400 <= response.status_code < 500, (entry["path"], response.text)
        assert response.json()["error"]["code"]
    deadline = time.monotonic() + 240
    while True:
        page = client.get("/v1/jobs", params={"limit": 100}).json()["items"]
        if sum(j["status"] in ("succeeded", "failed") for j in page) == len(jobs):
            break
        assert time.monotonic() < deadline, "corpus jobs did not finish"
        time.sleep(0.2)
    failed = [(jobs[j["id"]], j["error"]) for j in page if j["status"] != "succeeded"]
    assert failed == []
    for job_id, path in jobs.items():
        outputs = {s["name"]: s["output"] for s in client.get(f"/v1/jobs/{job_id}").json()[
            "steps"]}
        for name, made in outputs["sizes"].items():
            stored = client.settings.storage_dir / made["key"]
            assert stored.stat().st_size == made["bytes"], (path, name)
            assert image_size(stored.read_bytes()) == (made["width"], made["height"])
        assert outputs["sizes"]["icon"]["width"] == outputs["sizes"]["icon"]["height"] == 32
    assert not (client.settings.storage_dir / "refused").exists()
    listed = client.get("/v1/images", params={"prefix": "refused/"}).json()["items"]
    assert listed == []
