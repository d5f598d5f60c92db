"""`darkroom pipelines` and `darkroom jobs` on the local catalog, and a real worker run
driven from the command line: upload, worker, jobs list/show/retry."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from darkroom.cli import app

from corpus_files import CORPUS
from .conftest import Deployment
from .test_kill_worker import PHOTOS

runner = CliRunner()
YAML = """
pipelines:
  - name: thumbs
    trigger: {prefix: "cli/"}
    steps:
      - {name: sizes, type: renditions, params: {renditions: {t: "w=40"}}}
      - {name: stop, type: fail, params: {error: planned_stop}}
"""


def test_pipelines_and_jobs_from_the_command_line(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("DARKROOM_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "p.yaml").write_text(YAML)
    applied = runner.invoke(app, ["pipelines", "apply", str(tmp_path / "p.yaml")])
    assert applied.exit_code == 0 and "created thumbs" in applied.output
    listed = runner.invoke(app, ["pipelines", "list"])
    assert "thumbs  on   prefix='cli/'  sizes -> stop" in listed.output
    shown = json.loads(runner.invoke(app, ["pipelines", "show", "thumbs"]).output)
    assert shown["steps"][0]["params"] == {"renditions": {"t": "w=40"}}

    photo = CORPUS / PHOTOS[0]["path"]
    uploaded = runner.invoke(app, ["upload", str(photo), "--prefix", "cli/"])
    assert uploaded.exit_code == 0, uploaded.output
    (job,) = [json.loads(line) for line in runner.invoke(
        app, ["jobs", "list", "--json"]).output.splitlines()]
    assert (job["status"], job["pipeline"]) == ("queued", "thumbs")
    waited = runner.invoke(app, ["jobs", "show", job["id"], "--wait", "0.3"])
    assert json.loads(waited.output)["status"] == "queued"  # no worker: as it stands

    deployment = Deployment(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'catalog.sqlite'}",
                            {"DARKROOM_PIPELINES__POLL_S": "0.05"})
    deployment.start_worker("cli", tmp_path / "worker.log")
    try:  # shown once it has ended
        detail = json.loads(runner.invoke(app, ["jobs", "show", job["id"], "--wait", "60"])
                            .output)
        assert detail["status"] == "failed" and detail["error"].startswith("planned_stop")
        assert detail["steps"][0]["state"] == "succeeded"
        retried = runner.invoke(app, ["jobs", "retry", job["id"]])
        assert retried.exit_code == 0 and "run 2" in retried.output
        deployment.wait_jobs_finished(1)
        again = json.loads(runner.invoke(app, ["jobs", "show", job["id"]]).output)
        assert again["run"] == 2 and again["steps"][0]["attempts"] == 1
    finally:
        deployment.stop_workers()
    missing = runner.invoke(app, ["jobs", "show", "0" * 32])
    assert missing.exit_code == 1 and "job_not_found" in missing.output
    cancel = runner.invoke(app, ["jobs", "cancel", job["id"]])
    assert cancel.exit_code == 1 and "job_not_cancellable" in cancel.output
    renditions = tmp_path / "data" / "storage" / "_renditions"
    kept = sorted(renditions.rglob("*.*"))  # the first job's, catalogued
    assert runner.invoke(app, ["upload", str(photo), "--prefix", "cli/b/"]).exit_code == 0
    assert len(list(renditions.rglob("*.*"))) == len(kept) + 1  # its job's head start
    queued = [j for j in map(json.loads, runner.invoke(app, ["jobs", "list", "--json"])
                             .output.splitlines()) if j["status"] == "queued"]
    cancel = runner.invoke(app, ["jobs", "cancel", queued[0]["id"]])
    assert cancel.exit_code == 0 and "cancelled" in cancel.output
    assert sorted(renditions.rglob("*.*")) == kept  # the head start went with the job
    assert runner.invoke(app, ["pipelines", "delete", "thumbs"]).exit_code == 0
    assert "pipeline_not_found" in runner.invoke(app, ["pipelines", "show", "thumbs"]).output
