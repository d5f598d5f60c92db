"""Signed URLs and bearer tokens through HTTP, `darkroom sign` against the server, and the
refusal to serve unsigned URLs on a public address."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest

from darkroom.config import Settings
from darkroom.errors import DarkroomError
from darkroom.signing import sign_url

from .helpers import CORPUS, PHOTO, assert_error, files_under, image_size

NEW, OLD = "new-key-0123456789", "old-key-9876543210"
PATH = f"/img/{PHOTO['path']}"
DARKROOM = str(Path(sys.executable).with_name("darkroom"))


@pytest.fixture
def signed(make_client):
    return make_client(signing_keys=[NEW, OLD])


def test_unsigned_url_is_401(signed):
    assert_error(signed.get(f"{PATH}?w=50"), 401, "signature_required")
    assert_error(signed.get(PATH), 401, "signature_required")
    assert files_under(signed.settings.cache_dir) == []


def test_signed_with_the_first_key_renders(signed):
    response = signed.get(sign_url(NEW, PATH, [("w", "50")]))
    assert response.status_code == 200, response.text
    assert image_size(response.content)[0] == 50


def test_signed_with_the_second_old_key_is_still_accepted(signed):
    response = signed.get(sign_url(OLD, PATH, [("w", "50"), ("fm", "png")]))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"


def test_parameter_order_does_not_matter(signed):
    url = sign_url(NEW, PATH, [("w", "50"), ("fm", "webp"), ("q", "70")])
    path, query = url.split("?")
    reordered = "&".join(reversed(query.split("&")))
    assert signed.get(f"{path}?{reordered}").status_code == 200


@pytest.mark.parametrize("tamper", [
    lambda url: url.replace("w=50", "w=51"),
    lambda url: url.replace("?", "?h=10&"),
    lambda url: url.replace(PHOTO["path"], "photos/other.jpg"),
    lambda url: url[:-2] + ("AA" if not url.endswith("AA") else "BB"),
    lambda url: url.split("&s=")[0] + "&s=",
])
def test_tampered_url_is_403(signed, tamper):
    response = signed.get(tamper(sign_url(NEW, PATH, [("w", "50")])))
    assert_error(response, 403, "bad_signature")


def test_signature_with_an_unknown_key_is_403(signed):
    assert_error(signed.get(sign_url("not-a-key", PATH, [("w", "50")])), 403, "bad_signature")


def test_expired_url_is_403_and_a_live_one_works(signed):
    expired = sign_url(NEW, PATH, [("w", "50")], expires=int(time.time()) - 5)
    assert_error(signed.get(expired), 403, "expired_signature")
    live = sign_url(NEW, PATH, [("w", "50")], expires=int(time.time()) + 3600)
    assert signed.get(live).status_code == 200
    stretched = live.replace(f"exp={int(time.time()) + 3600}", "exp=99999999999")
    assert_error(signed.get(stretched), 403, "bad_signature")


def test_allow_unsigned_serves_unsigned_but_still_checks_given_signatures(make_client):
    client = make_client(signing_keys=[NEW], allow_unsigned=True)
    assert client.get(f"{PATH}?w=20").status_code == 200
    assert client.get(sign_url(NEW, PATH, [("w", "20")])).status_code == 200
    assert_error(client.get(f"{PATH}?w=20&s=forged"), 403, "bad_signature")


def _cli_sign(url: str, *args: str, keys: str = f"{NEW},{OLD}") -> str:
    env = {**os.environ, "DARKROOM_SIGNING_KEYS": keys}
    done = subprocess.run([DARKROOM, "sign", url, *args], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_darkroom_sign_output_works_against_the_server(signed):
    target = signed.settings.storage_dir / "albums" / "été" / "my photo+1.jpg"
    target.parent.mkdir(parents=True)
    shutil.copyfile(CORPUS / PHOTO["path"], target)
    encoded = "/img/albums/%C3%A9t%C3%A9/my%20photo%2B1.jpg"
    urls = [
        _cli_sign(f"{PATH}?w=40&fm=webp"),
        _cli_sign(f"{PATH}?fm=webp&w=40", "--expires-in", "600"),
        _cli_sign(f"{encoded}?w=40"),                 # as it appears in a page
        _cli_sign("/img/albums/été/my photo+1.jpg?w=40"),  # as a person types it
        _cli_sign(f"{encoded}?w=40&dl={quote('a b')}"),
    ]
    assert all(" " not in url for url in urls)  # the printed URLs are ready to use
    for url in urls:
        response = signed.get(url)
        assert response.status_code == 200, (url, response.text)
        assert image_size(response.content)[0] == 40
    base = _cli_sign(f"{PATH}?w=40", "--base", "https://img.example.com")
    assert base.startswith(f"https://img.example.com{PATH}?")
    assert signed.get(base.removeprefix("https://img.example.com")).status_code == 200


def test_darkroom_sign_expiry_is_enforced_by_the_server(signed):
    url = _cli_sign(f"{PATH}?w=40", "--expires-in", "3600")
    query = dict(parse_qsl(urlsplit(url).query))
    assert int(query["exp"]) > time.time()
    assert signed.get(url).status_code == 200
    query["exp"] = str(int(query["exp"]) + 10)
    assert_error(signed.get(f"{PATH}?{urlencode(query)}"), 403, "bad_signature")


def test_v1_needs_a_bearer_token(signed):
    assert_error(signed.get(f"/v1/info/{PHOTO['path']}"), 401, "token_required")
    bad = signed.get(f"/v1/info/{PHOTO['path']}", headers={"Authorization": "Bearer nope"})
    assert_error(bad, 403, "bad_token")
    basic = signed.get(f"/v1/info/{PHOTO['path']}", headers={"Authorization": f"Basic {NEW}"})
    assert_error(basic, 401, "token_required")
    for key in (NEW, OLD):
        ok = signed.get(f"/v1/info/{PHOTO['path']}", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200 and ok.json()["width"] == PHOTO["width"]
    plan = {"source": {"key": PHOTO["path"]}, "ops": [{"op": "resize", "width": 30}]}
    assert_error(signed.post("/v1/transform", json=plan), 401, "token_required")
    assert_error(signed.post("/v1/transform", json=plan,
                             headers={"Authorization": "Bearer nope"}), 403, "bad_token")
    done = signed.post("/v1/transform", json=plan, headers={"Authorization": f"Bearer {OLD}"})
    assert done.status_code == 200 and image_size(done.content)[0] == 30


def test_operational_endpoints_need_no_token(signed):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert signed.get(path).status_code == 200, path


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "img.example.com"])
def test_public_binding_without_a_key_is_refused(host):
    with pytest.raises(DarkroomError) as caught:
        Settings(host=host).require_safe_binding()
    assert caught.value.code == "unsafe_binding"
    assert "DARKROOM_SIGNING_KEYS" in caught.value.message
    Settings(host=host, signing_keys=["k"]).require_safe_binding()
    Settings(host=host, allow_unsigned=True).require_safe_binding()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_binding_needs_no_key(host):
    Settings(host=host).require_safe_binding()
