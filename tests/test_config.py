"""Settings: defaults < darkroom.toml (or DARKROOM_CONFIG) < DARKROOM_* env < arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from darkroom.cli import app
from darkroom.config import Settings
from darkroom.pipelines import sealing

runner = CliRunner()




def test_defaults_make_a_first_run_work():
    settings = Settings()
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8080, 1)
    assert settings.data_dir == Path("darkroom-data")
    assert settings.storage == "local"
    assert settings.storage_dir == Path("darkroom-data/storage")
    assert settings.cache_dir == Path("darkroom-data/cache")
    assert settings.signing_keys == [] and not settings.allow_unsigned
    assert settings.limits.max_megapixels == 50 and settings.limits.max_output_side == 8192
    assert settings.limits.max_source_bytes == 100 * 1024 * 1024
    assert settings.limits.max_frames == 256
    settings.require_safe_binding()


def test_environment_overrides_defaults(monkeypatch):
    monkeypatch.setenv("DARKROOM_PORT", "9001")
    monkeypatch.setenv("DARKROOM_DATA_DIR", "/srv/images")
    monkeypatch.setenv("DARKROOM_LIMITS__MAX_MEGAPIXELS", "80")
    monkeypatch.setenv("DARKROOM_LIMITS__TIME_BUDGET_S", "2.5")
    monkeypatch.setenv("DARKROOM_S3__BUCKET", "pics")
    monkeypatch.setenv("DARKROOM_SIGNING_KEYS", " new-key , old-key ,")
    monkeypatch.setenv("DARKROOM_ALLOW_UNSIGNED", "true")
    monkeypatch.setenv("DARKROOM_CACHE_CONTROL", "public, max-age=60")
    settings = Settings()
    assert settings.port == 9001
    assert settings.data_dir == Path("/srv/images")
    assert settings.limits.max_megapixels == 80
    assert settings.limits.time_budget_s == 2.5
    assert settings.limits.max_frames == 256  # untouched siblings keep their defaults
    assert settings.s3.bucket == "pics" and settings.s3.region == "us-east-1"
    assert [k.get_secret_value() for k in settings.signing_keys] == ["new-key", "old-key"]
    assert settings.allow_unsigned is True
    assert settings.cache_control == "public, max-age=60"


def test_toml_in_the_working_directory_overrides_defaults(tmp_path):
    (tmp_path / "darkroom.toml").write_text(
        'port = 7000\nworkers = 3\nsigning_keys = ["toml-key"]\n'
        '[limits]\nmax_output_side = 4096\n[s3]\nbucket = "from-toml"\nallow_http = true\n')
    settings = Settings()
    assert (settings.port, settings.workers) == (7000, 3)
    assert settings.limits.max_output_side == 4096
    assert settings.limits.max_megapixels == 50
    assert settings.s3.bucket == "from-toml" and settings.s3.allow_http is True
    assert [k.get_secret_value() for k in settings.signing_keys] == ["toml-key"]


def test_darkroom_config_names_another_file(tmp_path, monkeypatch):
    (tmp_path / "darkroom.toml").write_text("port = 7000\n")
    other = tmp_path / "etc" / "prod.toml"
    other.parent.mkdir()
    other.write_text('port = 7100\nhost = "::1"\n')
    monkeypatch.setenv("DARKROOM_CONFIG", str(other))
    settings = Settings()
    assert (settings.port, settings.host) == (7100, "::1")


def test_environment_beats_toml_and_arguments_beat_both(tmp_path, monkeypatch):
    (tmp_path / "darkroom.toml").write_text("port = 7000\nthreads = 3\n[limits]\nmax_frames = 9\n")
    monkeypatch.setenv("DARKROOM_PORT", "7001")
    monkeypatch.setenv("DARKROOM_LIMITS__MAX_FRAMES", "10")
    settings = Settings()
    assert (settings.port, settings.threads, settings.limits.max_frames) == (7001, 3, 10)
    assert Settings(port=7002).port == 7002


def test_missing_darkroom_toml_is_fine_but_a_named_missing_file_is_an_error(monkeypatch):
    assert Settings().port == 8080
    monkeypatch.setenv("DARKROOM_CONFIG", "/nonexistent/darkroom.toml")
    with pytest.raises(ValueError, match="DARKROOM_CONFIG"):
        Settings()


@pytest.mark.parametrize(("name", "value", "field"), [
    ("DARKROOM_PORT", "eighty", "port"),
    ("DARKROOM_PORT", "70000", "port"),
    ("DARKROOM_WORKERS", "0", "workers"),
    ("DARKROOM_STORAGE", "ftp", "storage"),
    ("DARKROOM_LOG_LEVEL", "loud", "log_level"),
    ("DARKROOM_LIMITS__MAX_MEGAPIXELS", "0", "max_megapixels"),
    ("DARKROOM_LIMITS__TIME_BUDGET_S", "-1", "time_budget_s"),
    ("DARKROOM_ALLOW_UNSIGNED", "perhaps", "allow_unsigned"),
    ("DARKROOM_RETENTION__MULTIPART_HOURS", "0.5", "multipart_hours"),  # may be under way
    ("DARKROOM_RETENTION__EVENTS_DAYS", "-1", "events_days"),
])
def test_bad_environment_value_is_an_error_naming_the_field(monkeypatch, name, value, field):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert field in str(caught.value)


@pytest.mark.parametrize(("text", "field"), [
    ("port = 'x'\n", "port"),
    ("colour = 'blue'\n", "colour"),
    ("[limits]\nmax_frames = 0\n", "max_frames"),
    ("[limits]\nmax_pages = 3\n", "max_pages"),
    ("[s3]\nbuckets = 'x'\n", "buckets"),
])
def test_bad_toml_value_is_an_error_naming_the_field(tmp_path, text, field):
    (tmp_path / "darkroom.toml").write_text(text)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert field in str(caught.value)


def test_malformed_toml_is_an_error(tmp_path):
    (tmp_path / "darkroom.toml").write_text("port = [\n")
    with pytest.raises(ValueError):
        Settings()


@pytest.mark.parametrize("setup", [
    lambda p, env: env.setenv("DARKROOM_PORT", "eighty"),
    lambda p, env: (p / "darkroom.toml").write_text("port = [\n"),
    lambda p, env: (p / "darkroom.toml").write_text("unknown_option = 1\n"),
    lambda p, env: env.setenv("DARKROOM_CONFIG", str(p / "missing.toml")),
])
def test_cli_reports_bad_configuration_clearly(tmp_path, monkeypatch, setup):
    setup(tmp_path, monkeypatch)
    for command in (["config", "show"], ["serve"], ["sign", "/img/a.jpg"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.startswith("bad configuration: ")
        assert "Traceback" not in result.output
        assert not (tmp_path / "darkroom-data").exists()


def test_config_show_prints_the_effective_configuration(tmp_path, monkeypatch):
    (tmp_path / "darkroom.toml").write_text("port = 7000\n[limits]\nmax_frames = 12\n")
    monkeypatch.setenv("DARKROOM_THREADS", "5")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["port"], shown["threads"], shown["limits"]["max_frames"]) == (7000, 5, 12)


def test_public_dict_never_holds_a_secret():
    sealing_key = sealing.new_key()
    settings = Settings(signing_keys=["key-one-secret", "key-two-secret"],
                        s3={"bucket": "b", "secret_access_key": "s3-secret", "access_key_id": "AK"},
                        secret_keys=[sealing_key])
    text = json.dumps(settings.public_dict())
    assert "secret" not in text.replace("secret_access_key", "").replace("secret_keys", "")
    assert sealing_key not in text
    assert settings.signing_keys[0].get_secret_value() == "key-one-secret"  # still usable


def test_a_bad_sealing_key_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv("DARKROOM_SECRET_KEYS", "not-a-key")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 2 and "secret_keys" in result.stderr
    assert "not-a-key" not in result.output
