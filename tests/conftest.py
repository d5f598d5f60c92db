"""Shared fixtures."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import boto3
import pytest

from darkroom.config import S3
from darkroom.pipelines import sealing


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests run on asyncio only (the server's loop)."""
    return "asyncio"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (one per xdist worker); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_settings(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """S3 settings for a fresh, empty bucket on the moto server; AWS_* env vars cleared."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    bucket = f"test-{uuid.uuid4().hex}"
    boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    return S3(
        bucket=bucket,
        endpoint=s3_server,
        access_key_id="testing",
        secret_access_key="testing",
        allow_http=True,
    )


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No DARKROOM_* variable or darkroom.toml of the machine leaks into a test."""
    for name in list(os.environ):
        if name.startswith("DARKROOM_") and name != "DARKROOM_CORPUS":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    sealing.use([])  # no key an earlier test left: each test seals as it configures
