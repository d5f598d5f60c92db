"""One `Settings` object: defaults < `darkroom.toml` < `DARKROOM_*` environment variables.

The config file is `./darkroom.toml`, or the path in `DARKROOM_CONFIG`. Nested groups use
`__` in environment names: `DARKROOM_LIMITS__MAX_MEGAPIXELS=80`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from typing_extensions import Annotated

from darkroom.events.settings import Events


class Limits(BaseModel):
    """Caps checked from the header before decoding and again after every step."""

    model_config = ConfigDict(extra="forbid")  # a misspelt cap must not pass silently

    max_source_bytes: int = Field(100 * 1024 * 1024, ge=1)
    max_megapixels: float = Field(50.0, gt=0)
    max_frames: int = Field(256, ge=1)
    max_output_side: int = Field(8192, ge=16)
    time_budget_s: float = Field(20.0, gt=0, description="wall time for one render")
    max_body_bytes: int = Field(100 * 1024 * 1024, ge=1, description="POST /v1/transform body")

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)


class S3(BaseModel):
    """S3-compatible object storage (used when `storage = "s3"`)."""

    model_config = ConfigDict(extra="forbid")

    bucket: str = ""
    endpoint: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    prefix: str = ""
    allow_http: bool = False


class Thumbor(BaseModel):
    """Thumbor URLs at the server root."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    respect_orientation: bool = Field(True, description="Thumbor's RESPECT_ORIENTATION "
                                      "(Thumbor's default is false: EXIF orientation ignored)")


class Sih(BaseModel):
    """The AWS Serverless Image Handler drop-in at the server root. SIH's own environment
    names (SOURCE_BUCKETS, AUTO_WEBP, CORS_ENABLED, CORS_ORIGIN, ENABLE_SIGNATURE) are
    read too, below the DARKROOM_SIH__* ones."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    source_buckets: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["darkroom"], min_length=1,
                                      description="bucket names allowed; the first is the "
                                      "default; every one reads the configured storage")
    bucket_prefixes: dict[str, str] = Field(default_factory=dict, description=(
        "optional key prefix per bucket name, e.g. {\"photos\": \"photos/\"}"))
    auto_webp: bool = False
    auto_avif: bool = False
    enable_signature: bool = False
    signing_key: SecretStr | None = None
    cors_enabled: bool = False
    cors_origin: str = "*"

    @field_validator("source_buckets", mode="before")
    @classmethod
    def _split_buckets(cls, value: object) -> object:
        if isinstance(value, str):  # SIH's form: "a, b,c"
            return [b.strip() for b in value.split(",") if b.strip()]
        return value


class _SihEnvironment(PydanticBaseSettingsSource):
    """SIH's own environment variable names, so a deployment's settings carry over."""

    NAMES = {"SOURCE_BUCKETS": "source_buckets", "AUTO_WEBP": "auto_webp",
             "CORS_ENABLED": "cors_enabled", "CORS_ORIGIN": "cors_origin",
             "ENABLE_SIGNATURE": "enable_signature"}

    def get_field_value(self, field, field_name):
        """Unused: `__call__` reads every name at once."""
        return None, field_name, False

    def __call__(self) -> dict:
        found = {f: os.environ[n] for n, f in self.NAMES.items() if n in os.environ}
        return {"sih": found} if found else {}


class Pipelines(BaseModel):
    """The pipeline workers: in the server process by default, or `darkroom worker` alone."""

    model_config = ConfigDict(extra="forbid")

    file: Path | None = Field(None, description="YAML pipelines applied at start")
    in_process: bool = Field(True, description="serve runs a worker once a pipeline exists")
    concurrency: int = Field(32, ge=1, le=256, description="runs at once per worker (the "
                             "queue is polled every poll_s, so this over poll_s bounds "
                             "jobs/s; more runs than render threads keep the renders fed "
                             "while some wait on the database)")
    heartbeat_s: float = Field(2.0, gt=0, le=300)
    dead_after_s: float = Field(30.0, gt=0, le=86400, description="a worker silent this "
                                "long is dead: another worker resumes its runs")
    poll_s: float = Field(0.5, gt=0, le=60, description="queue polling interval (each "
                          "poll costs the worker a few ms of CPU, busy or idle)")
    render_threads: int | None = Field(None, ge=1, le=128, description="renders at once "
                                       "per worker; default twice `threads`, so that one "
                                       "render's waits (its decode and encode in libvips's "
                                       "own thread) leave no core idle")
    webhook_hosts: list[str] = Field(default_factory=list, description="hosts a webhook "
                                     "step may reach on private, loopback or link-local "
                                     "addresses (others must be public)")


class Retention(BaseModel):
    """How long the catalog keeps records that only history needs (`catalog.retention`);
    0 days keeps them for ever."""

    model_config = ConfigDict(extra="forbid")

    events_days: float = Field(30.0, ge=0, le=36500, description="outbox events "
                               "delivered, given up on, or taken by no sink are deleted "
                               "this long after")
    workflows_days: float = Field(7.0, ge=0, le=36500, description="DBOS's records of a "
                                  "run are deleted this long after it ended, once its job "
                                  "has (the job, its steps and attempts stay until the "
                                  "image goes)")
    multipart_hours: float = Field(24.0, ge=0, le=876000, description="S3 multipart "
                                   "uploads under the storage prefix begun this long ago "
                                   "and never completed (a process killed mid-upload) are "
                                   "aborted; 0, or at least 1 (younger ones may still be "
                                   "under way)")
    interval_s: float = Field(3600.0, gt=0, description="how often each server process "
                              "and worker looks for what is due")

    @field_validator("multipart_hours")
    @classmethod
    def _not_under_way(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("0 (keep them) or at least 1: a younger upload may be under way")
        return value


_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,4096}")


class ApiKey(BaseModel):
    """A bearer token for the `/v1/` API, with the scope it grants (see `server.auth`)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # no key in logs
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                      description="shown in the access log of the requests it makes")
    key: SecretStr
    scope: Literal["read", "write", "admin"]  # no default: a forgotten scope is no admin

    @field_validator("key")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        if not _TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError("an API key is 16 or more of A-Z a-z 0-9 . _ ~ + / = - (a "
                             "bearer token as HTTP carries it)")
        return value


class Settings(BaseSettings):
    """Effective configuration of a darkroom process."""

    model_config = SettingsConfigDict(  # errors name the setting, never its value (a key)
        env_prefix="DARKROOM_", env_nested_delimiter="__", extra="forbid",
        hide_input_in_errors=True,
    )

    data_dir: Path = Path("darkroom-data")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64, description="server processes, each its own socket")
    threads: int = Field(2, ge=1, le=64, description="engine threads per process")
    queue_size: int = Field(16, ge=0, description="renders waiting beyond the threads")

    storage: Literal["local", "s3"] = "local"
    s3: S3 = S3()
    database_url: str = Field("", max_length=4096, description="catalog database: "
                              "sqlite:///path or postgresql://user:pass@host/db; empty "
                              "means sqlite:///{data_dir}/catalog.sqlite")
    result_cache: bool = Field(True, description="keep rendered derivatives on disk")
    cache_max_bytes: int = Field(1024**3, ge=0, description="result cache bound, local disk")
    cache_memory_bytes: int = Field(64 * 1024**2, ge=0, description="hot results kept in "
                                    "memory per process, in front of the disk cache")
    cache_control: str = "public, max-age=86400"

    signing_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list, description=(
        "seal the secrets of stored pipeline definitions (`darkroom secret-key` makes one; "
        "the first seals, all open) [default: SQLite, a key file in data_dir; "
        "PostgreSQL, none: stored plain]"))
    allow_unsigned: bool = False
    api_keys: list[ApiKey] = Field(default_factory=list, description=(
        "bearer tokens for /v1/ with their scope; without them, the signing keys"))
    api_token: SecretStr | None = Field(None, description=(
        "the bearer token the CLI sends to --server [default: the narrowest key of "
        "api_keys that will do, else the first signing key]"))
    limits: Limits = Limits()
    thumbor: Thumbor = Thumbor()
    sih: Sih = Sih()
    events: Events = Events()
    pipelines: Pipelines = Pipelines()
    retention: Retention = Retention()

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True

    @field_validator("signing_keys", "secret_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("secret_keys")
    @classmethod
    def _sealing_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        from darkroom.pipelines.sealing import decode_key

        for key in keys:
            decode_key(key.get_secret_value())
        return keys

    @field_validator("api_keys")
    @classmethod
    def _distinct(cls, keys: list[ApiKey]) -> list[ApiKey]:
        if len({k.name for k in keys}) < len(keys):
            raise ValueError("two API keys have the same name")
        if len({k.key.get_secret_value() for k in keys}) < len(keys):
            raise ValueError("two API keys have the same key")
        return keys

    @model_validator(mode="after")
    def _apart_from_signing_keys(self) -> Settings:
        signing = {k.get_secret_value() for k in self.signing_keys}
        if any(k.key.get_secret_value() in signing for k in self.api_keys):
            raise ValueError("an API key is also a signing key: whoever signs image URLs "
                             "would hold it")
        return self

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'catalog.sqlite'}"
        try:
            make_url(self.database_url)
        except ArgumentError:
            raise ValueError("database_url is not a database URL") from None
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("DARKROOM_CONFIG", "darkroom.toml"))
        if "DARKROOM_CONFIG" in os.environ and not toml_path.is_file():
            raise ValueError(f"DARKROOM_CONFIG names {toml_path}, which is not a file")
        return (init_settings, env_settings, _SihEnvironment(settings_cls),
                TomlConfigSettingsSource(settings_cls, toml_path))

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    def require_safe_binding(self) -> None:
        """Refuse a public binding that would serve unsigned URLs nobody asked for."""
        from darkroom.errors import DarkroomError

        if self.signing_keys or self.allow_unsigned or is_loopback(self.host):
            return
        raise DarkroomError(
            f"refusing to bind {self.host} without a signing key: set DARKROOM_SIGNING_KEYS, "
            "or DARKROOM_ALLOW_UNSIGNED=true to serve unsigned URLs on purpose",
            code="unsafe_binding",
        )

    def public_dict(self) -> dict:
        """The configuration with secrets masked, for `darkroom config show`."""
        from sqlalchemy.engine import make_url

        shown = self.model_dump(mode="json")
        shown["database_url"] = make_url(self.database_url).render_as_string(hide_password=True)
        return shown


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
