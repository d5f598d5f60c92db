"""The server on S3 storage (moto's S3 endpoint): renders, info, misses, readiness."""

from __future__ import annotations

import socket

import boto3

from darkroom.config import S3, Settings

from .helpers import CORPUS, PHOTO, assert_error, files_under, image_size


def _put(s3: S3, key: str, data: bytes) -> None:
    boto3.client("s3", endpoint_url=s3.endpoint, region_name=s3.region,
                 aws_access_key_id=s3.access_key_id,
                 aws_secret_access_key=s3.secret_access_key.get_secret_value(),
                 ).put_object(Bucket=s3.bucket, Key=key, Body=data)


def test_img_renders_a_source_from_the_bucket(make_client, s3_settings, tmp_path):
    _put(s3_settings, "uploads/photo.jpg", (CORPUS / PHOTO["path"]).read_bytes())
    settings = Settings(data_dir=tmp_path / "data", storage="s3", s3=s3_settings,
                        access_log=False)
    client = make_client(settings=settings)
    first = client.get("/img/uploads/photo.jpg?w=64&fm=webp")
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "image/webp"
    assert image_size(first.content)[0] == 64
    assert first.headers["x-cache"] == "MISS"
    second = client.get("/img/uploads/photo.jpg?w=64&fm=webp",
                        headers={"If-None-Match": first.headers["etag"]})
    assert second.status_code == 304
    third = client.get("/img/uploads/photo.jpg?w=64&fm=webp")
    assert third.headers["x-cache"] == "HIT" and third.content == first.content
    assert len(files_under(settings.cache_dir)) == 1
    info = client.get("/v1/info/uploads/photo.jpg").json()
    assert (info["width"], info["height"]) == (PHOTO["width"], PHOTO["height"])
    assert_error(client.get("/img/uploads/nope.jpg"), 404, "source_not_found")
    assert_error(client.get("/img/..%2Fother-bucket%2Fx.jpg"), 400, "bad_key")
    assert client.get("/readyz").status_code == 200


def test_replacing_an_object_changes_the_etag(make_client, s3_settings, tmp_path):
    _put(s3_settings, "a.jpg", (CORPUS / PHOTO["path"]).read_bytes())
    settings = Settings(data_dir=tmp_path / "data", storage="s3", s3=s3_settings,
                        access_log=False)
    client = make_client(settings=settings)
    before = client.get("/img/a.jpg?w=20")
    _put(s3_settings, "a.jpg", (CORPUS / "png" / "alpha_dice.png").read_bytes())
    after = client.get("/img/a.jpg?w=20")
    assert after.headers["etag"] != before.headers["etag"]
    assert after.headers["content-type"] == "image/png"


def test_readyz_is_503_when_s3_is_unreachable(make_client, s3_settings, tmp_path):
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = s3_settings.model_copy(update={"endpoint": f"http://127.0.0.1:{port}"})
    settings = Settings(data_dir=tmp_path / "data", storage="s3", s3=dead, access_log=False)
    client = make_client(settings=settings)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert client.get("/healthz").status_code == 200
    assert_error(client.get("/img/a.jpg?w=10"), 502, "storage_unavailable")


def test_readyz_is_503_when_the_bucket_is_missing(make_client, s3_settings, tmp_path):
    missing = s3_settings.model_copy(update={"bucket": "no-such-bucket-here"})
    settings = Settings(data_dir=tmp_path / "data", storage="s3", s3=missing, access_log=False)
    client = make_client(settings=settings)
    assert client.get("/readyz").status_code == 503
