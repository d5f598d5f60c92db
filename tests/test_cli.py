"""The `darkroom` command: help, transform, info, sign, config show, serve's safety checks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import pyvips
from typer.testing import CliRunner

from darkroom.cli import app
from darkroom.signing import verify

from corpus_files import CORPUS, MANIFEST, OK_FILES, REJECT_FILES  # noqa: F401
DARKROOM = str(Path(sys.executable).with_name("darkroom"))
runner = CliRunner()




def flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def pick(predicate) -> dict:
    return next(f for f in MANIFEST if predicate(f))


@pytest.mark.parametrize("command", [[], ["serve"], ["transform"], ["sign"], ["info"],
                                     ["config"], ["config", "show"], ["migrate"], ["upload"],
                                     ["images"], ["worker"], ["pipelines"],
                                     ["pipelines", "apply"], ["pipelines", "list"],
                                     ["pipelines", "show"], ["pipelines", "delete"], ["jobs"],
                                     ["jobs", "list"], ["jobs", "show"], ["jobs", "retry"],
                                     ["jobs", "cancel"]])
def test_help_on_every_command(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_help_as_a_real_command():
    done = subprocess.run([DARKROOM, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("serve", "transform", "sign", "info", "config"):
        assert command in done.stdout


def test_transform_writes_files(tmp_path):
    picked, stems = [], set()
    for trait in ("hevc", "alpha", "animated", "vector", "multi-page", "cmyk", "photo"):
        entry = next((f for f in OK_FILES if trait in f["traits"]
                      and Path(f["path"]).stem not in stems), None)
        if entry is not None:
            stems.add(Path(entry["path"]).stem)
            picked.append(entry)
    assert len(picked) >= 5
    out = tmp_path / "out"
    result = runner.invoke(app, ["transform", "-q", "w=64&fm=webp", "-o", str(out),
                                 *(str(CORPUS / f["path"]) for f in picked)])
    assert result.exit_code == 0, result.output
    assert f"{len(picked)} written" in flat(result.stderr)
    for entry in picked:
        written = out / f"{Path(entry['path']).stem}.webp"
        image = pyvips.Image.new_from_buffer(written.read_bytes(), "")
        assert image.width == 64 and image.get("vips-loader").startswith("webpload")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{Path(e['path']).stem}.webp" for e in picked)  # no temporary files left


def test_transform_keeps_a_web_format_by_default(tmp_path):
    jpeg = pick(lambda f: f["expect"] == "ok" and f["container"] == "jpeg")
    tiff = pick(lambda f: f["expect"] == "ok" and f["container"] == "tiff")
    result = runner.invoke(app, ["transform", "-q", "w=30", "-o", str(tmp_path / "o"),
                                 str(CORPUS / jpeg["path"]), str(CORPUS / tiff["path"])])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / f"{Path(jpeg['path']).stem}.jpg").is_file()
    assert (tmp_path / "o" / f"{Path(tiff['path']).stem}.png").is_file()


def test_transform_reports_failures_with_exit_1(tmp_path):
    good = pick(lambda f: f["expect"] == "ok" and f["container"] == "jpeg")
    out = tmp_path / "out"
    files = [str(CORPUS / good["path"]), *(str(CORPUS / f["path"]) for f in REJECT_FILES)]
    result = runner.invoke(app, ["transform", "-q", "w=50", "-o", str(out), "--jobs", "3",
                                 *files])
    assert result.exit_code == 1, result.output
    report = flat(result.stderr)
    assert f"1 written to {out}, {len(REJECT_FILES)} failed" in report
    for entry in REJECT_FILES:
        assert entry["path"] in report
    assert [p.name for p in out.iterdir()] == [f"{Path(good['path']).stem}.jpg"]


def test_transform_never_overwrites_an_output_with_another(tmp_path):
    by_stem: dict[str, list[dict]] = {}
    for entry in OK_FILES:
        by_stem.setdefault(Path(entry["path"]).stem, []).append(entry)
    twins = next(group for group in by_stem.values() if len(group) > 1)[:2]
    result = runner.invoke(app, ["transform", "-q", "w=20&fm=png", "-o", str(tmp_path / "o"),
                                 *(str(CORPUS / e["path"]) for e in twins)])
    assert result.exit_code == 1
    assert "already the output of another input" in flat(result.stderr)
    assert [p.name for p in (tmp_path / "o").iterdir()] == [f"{Path(twins[0]['path']).stem}.png"]


def test_transform_reports_file_names_verbatim(tmp_path):
    """Names are not console markup: `[x]` must not vanish from the report."""
    truncated = pick(lambda f: "truncated" in f["traits"])
    odd = tmp_path / "[x]holiday [red]1.jpg"
    odd.write_bytes((CORPUS / truncated["path"]).read_bytes())
    result = runner.invoke(app, ["transform", "-o", str(tmp_path / "o"), str(odd)])
    assert result.exit_code == 1
    assert str(odd) in flat(result.stderr)


def test_transform_as_a_real_command(tmp_path):
    """Through the installed entry point, with its progress bar on a terminal-less stderr."""
    reject = REJECT_FILES[0]
    good = OK_FILES[0]
    done = subprocess.run([DARKROOM, "transform", "-q", "w=20&fm=png", "-o", str(tmp_path),
                           str(CORPUS / good["path"]), str(CORPUS / reject["path"])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert (tmp_path / f"{Path(good['path']).stem}.png").is_file()
    assert reject["path"] in flat(done.stderr)
    assert "Traceback" not in done.stderr


def test_transform_bad_query_exits_2(tmp_path):
    photo = str(CORPUS / OK_FILES[0]["path"])
    result = runner.invoke(app, ["transform", "-q", "w=10&bogus=1", "-o", str(tmp_path), photo])
    assert result.exit_code == 2
    assert "unknown_param" in flat(result.stderr)
    assert list(tmp_path.iterdir()) == []


def test_transform_missing_file_exits_2(tmp_path):
    result = runner.invoke(app, ["transform", str(tmp_path / "nope.jpg")])
    assert result.exit_code == 2


def test_info_prints_json_lines():
    entries = [pick(lambda f: "exif-orientation-6" in f["traits"]),
               pick(lambda f: f["expect"] == "ok" and "animated" in f["traits"])]
    result = runner.invoke(app, ["info", *(str(CORPUS / e["path"]) for e in entries)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 2
    for entry, line in zip(entries, lines):
        assert line["file"] == str(CORPUS / entry["path"])
        assert (line["width"], line["height"]) == (entry["width"], entry["height"])
        assert line["pages"] == entry["frames"] and line["bytes"] == entry["bytes"]
    assert lines[0]["orientation"] == 6


def test_info_reports_a_bad_file_with_exit_1():
    empty = pick(lambda f: "zero-byte" in f["traits"])
    good = OK_FILES[0]
    result = runner.invoke(app, ["info", str(CORPUS / empty["path"]), str(CORPUS / good["path"])])
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["error"] and lines[0]["message"]
    assert lines[1]["width"] == good["width"]


def test_sign_needs_a_key():
    result = runner.invoke(app, ["sign", "/img/a.jpg?w=10"])
    assert result.exit_code == 2
    assert "DARKROOM_SIGNING_KEYS" in flat(result.stderr)


def test_sign_prints_a_url_the_server_accepts(monkeypatch):
    monkeypatch.setenv("DARKROOM_SIGNING_KEYS", "first-key,second-key")
    result = runner.invoke(app, ["sign", "/img/a b.jpg?w=10&fm=webp", "--expires-in", "60"])
    assert result.exit_code == 0, result.output
    url = result.stdout.strip()
    parts = urlsplit(url)
    assert parts.path == "/img/a%20b.jpg"
    query = parse_qsl(parts.query)
    assert int(dict(query)["exp"]) > time.time()
    verify(["first-key"], "/img/a b.jpg", query)  # the path as the server decodes it


def test_config_show_masks_secrets(monkeypatch):
    monkeypatch.setenv("DARKROOM_SIGNING_KEYS", "topsecret-signing-1, topsecret-signing-2")
    monkeypatch.setenv("DARKROOM_S3__SECRET_ACCESS_KEY", "topsecret-s3-key")
    monkeypatch.setenv("DARKROOM_S3__BUCKET", "my-bucket")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    assert "topsecret" not in result.output
    shown = json.loads(result.stdout)
    assert len(shown["signing_keys"]) == 2
    assert all(set(k) == {"*"} for k in shown["signing_keys"])
    assert set(shown["s3"]["secret_access_key"]) == {"*"}
    assert shown["s3"]["bucket"] == "my-bucket"
    assert shown["port"] == 8080


def test_config_show_with_a_bad_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DARKROOM_WORKERS", "many")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 2
    message = flat(result.stderr)
    assert "bad configuration" in message and "workers" in message
    assert "Traceback" not in result.output


def test_serve_refuses_a_public_address_without_a_key(tmp_path):
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)])
    assert result.exit_code != 0
    message = flat(result.stderr)
    assert "refusing to bind 0.0.0.0" in message
    assert "DARKROOM_SIGNING_KEYS" in message and "DARKROOM_ALLOW_UNSIGNED" in message
    assert not (tmp_path / "storage").exists()  # refused before touching anything


def test_serve_refusal_as_a_real_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DARKROOM_")}
    done = subprocess.run([DARKROOM, "serve", "--host", "0.0.0.0", "--port", "0"],
                          env={**env, "DARKROOM_DATA_DIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "refusing to bind 0.0.0.0" in flat(done.stderr)
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("env", [{"DARKROOM_ALLOW_UNSIGNED": "true"},
                                 {"DARKROOM_SIGNING_KEYS": "k-123"}])
def test_serve_on_a_public_address_with_a_key_or_allow_unsigned(tmp_path, env):
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        port = probe.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if not k.startswith("DARKROOM_")}
    process = subprocess.Popen(
        [DARKROOM, "serve", "--host", "0.0.0.0", "--port", str(port)],
        env={**base, **env, "DARKROOM_DATA_DIR": str(tmp_path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read().decode()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        sample = httpx.get(f"http://127.0.0.1:{port}/img/sample.jpg?w=10", timeout=30)
        assert sample.status_code == (401 if "DARKROOM_SIGNING_KEYS" in env else 200)
        process.send_signal(signal.SIGTERM)  # uvicorn re-raises it after a clean shutdown
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_config_show_masks_the_database_password(monkeypatch):
    monkeypatch.setenv("DARKROOM_DATABASE_URL", "postgresql://darkroom:hunter2@db.example/cat")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)["database_url"]
    assert "hunter2" not in shown and shown.startswith("postgresql://darkroom:***@")


def test_migrate_creates_the_catalog(tmp_path, monkeypatch):
    monkeypatch.setenv("DARKROOM_DATA_DIR", str(tmp_path / "data"))
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "catalog.sqlite").is_file()
    assert "catalog up to date" in flat(result.stderr)


def test_upload_and_images_on_the_local_catalog(tmp_path, monkeypatch):
    monkeypatch.setenv("DARKROOM_DATA_DIR", str(tmp_path / "data"))
    small = sorted((f for f in OK_FILES if f["bytes"] < 20000), key=lambda f: f["bytes"])[:3]
    refused = pick(lambda f: "not-an-image" in f["traits"])
    paths = [str(CORPUS / f["path"]) for f in [*small, refused]]
    result = runner.invoke(app, ["upload", *paths, "--prefix", "cli/", "--tag", "batch"])
    assert result.exit_code == 1, result.output
    assert "3 uploaded, 1 failed" in flat(result.stderr)
    assert "unsupported_format" in flat(result.stderr)
    assert all(Path(p).is_file() for p in paths)  # uploaded where they lie, never taken
    listed = runner.invoke(app, ["images", "--prefix", "cli/", "--json"])
    assert listed.exit_code == 0, listed.output
    items = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(i["key"] for i in items) == sorted(f"cli/{Path(f['path']).name}" for f in small)
    assert all(i["tags"] == ["batch"] for i in items)
    for item in items:
        assert (tmp_path / "data" / "storage" / item["key"]).is_file()
    one_page = runner.invoke(app, ["images", "--limit", "1"])
    assert one_page.exit_code == 0 and len(one_page.stdout.splitlines()) == 1
    assert "more: --cursor" in flat(one_page.stderr)


def test_upload_and_images_through_a_server(tmp_path, monkeypatch):
    from starlette.testclient import TestClient

    from darkroom import cli_catalog
    from darkroom.config import Settings
    from darkroom.server.app import create_app

    entry = min(OK_FILES, key=lambda f: f["bytes"])
    settings = Settings(data_dir=tmp_path / "srv", access_log=False)
    with TestClient(create_app(settings)) as client:
        # The command's HTTP client is the in-process test client (same httpx API).
        monkeypatch.setattr(cli_catalog.httpx, "Client", lambda **kwargs: client)
        monkeypatch.setattr(client, "close", lambda: None)  # the test closes it
        monkeypatch.setattr(cli_catalog.httpx, "get", lambda url, params, headers, timeout:
                            client.get(url.removeprefix("http://testserver"), params=params,
                                       headers=headers))
        path = str(CORPUS / entry["path"])
        result = runner.invoke(app, ["upload", path, "--server", "http://testserver",
                                     "--prefix", "remote/", "--tag", "t1"])
        assert result.exit_code == 0, result.output
        rerun = runner.invoke(app, ["upload", path, "--server", "http://testserver",
                                    "--prefix", "remote/", "--tag", "t1"])
        assert rerun.exit_code == 0, rerun.output  # same Idempotency-Key: the first answer
        again = runner.invoke(app, ["upload", path, "--server", "http://testserver",
                                    "--prefix", "remote/"])
        assert again.exit_code == 1 and "409 image_exists" in flat(again.stderr)
        listed = runner.invoke(app, ["images", "--server", "http://testserver", "--json"])
        items = [json.loads(line) for line in listed.stdout.splitlines()]
        name = Path(entry["path"]).name
        assert [(i["key"], i["tags"]) for i in items] == [(f"remote/{name}", ["t1"])]
