"""`GET|HEAD /img/{key}`: what a browser or a CDN sees for renders, errors, caching."""

from __future__ import annotations

import os
import shutil
from urllib.parse import quote

import pytest
import pyvips

from .helpers import (
    ALPHA_PNG, CORPUS, OK_FILES, PHOTO, REJECT_FILES, ROTATED, assert_error, files_under,
    image_size, loader_of, raw_get,
)

PHOTO_URL = f"/img/{PHOTO['path']}"
PATH_MARK = f"{PHOTO_URL}?w=200"
FLAG = next(f for f in OK_FILES if "flat-colour" in f["traits"])  # a watermark


def expected_height(entry: dict, width: int) -> int:
    """The height of `entry` scaled to `width` in its display orientation."""
    return round(width * entry["display_height"] / entry["display_width"])


@pytest.mark.parametrize(("query", "size"), [
    ("w=200", (200, expected_height(PHOTO, 200))),
    ("h=100", (round(100 * PHOTO["width"] / PHOTO["height"]), 100)),
    ("w=120&h=120", (120, expected_height(PHOTO, 120))),  # fit=inside is the default
    ("w=120&h=120&fit=cover", (120, 120)),
    ("w=120&h=120&fit=contain", (120, 120)),
    ("w=120&h=120&fit=fill", (120, 120)),
    ("w=120&h=120&fit=outside", (round(120 * PHOTO["width"] / PHOTO["height"]), 120)),
    ("w=100&dpr=2", (200, expected_height(PHOTO, 200))),
    ("w=300&h=60&fit=cover&crop=top", (300, 60)),
])
def test_resizes_to_the_requested_box(client, query, size):
    response = client.get(f"{PHOTO_URL}?{query}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert image_size(response.content) == size


@pytest.mark.parametrize(("fm", "mime", "loader"), [
    ("webp", "image/webp", "webpload"),
    ("png", "image/png", "pngload"),
    ("avif", "image/avif", "heifload"),
    ("jpeg", "image/jpeg", "jpegload"),
    ("jpg", "image/jpeg", "jpegload"),
    ("gif", "image/gif", "gifload"),
    ("tiff", "image/tiff", "tiffload"),
])
def test_fm_picks_the_output_format(client, fm, mime, loader):
    response = client.get(f"{PHOTO_URL}?w=64&fm={fm}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == mime
    assert loader_of(response.content).startswith(loader)
    assert image_size(response.content) == (64, expected_height(PHOTO, 64))


def test_exif_orientation_is_applied(client):
    response = client.get(f"/img/{ROTATED['path']}?w=100")
    assert response.status_code == 200
    assert ROTATED["display_height"] > ROTATED["display_width"]  # the photo stands upright
    assert image_size(response.content) == (100, expected_height(ROTATED, 100))


@pytest.mark.parametrize("entry", OK_FILES, ids=[f["path"] for f in OK_FILES])
def test_every_ok_corpus_file_renders(client, entry):
    response = client.get(f"/img/{quote(entry['path'])}?w=64")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("image/")
    width, height = image_size(response.content)
    assert width == 64
    assert abs(height - expected_height(entry, 64)) <= 1
    assert response.headers["x-cache"] == "MISS"


@pytest.mark.parametrize("entry", REJECT_FILES, ids=[f["path"] for f in REJECT_FILES])
def test_every_reject_corpus_file_is_a_4xx_and_nothing_is_cached(client, entry):
    url = f"/img/{quote(entry['path'])}?w=64&fm=webp"
    response = client.get(url)
    assert 400 <= response.status_code < 500, response.text
    error = assert_error(response, response.status_code)
    if "bomb" in entry["traits"]:
        assert (response.status_code, error["code"]) == (413, "too_many_pixels")
    assert response.headers["cache-control"] == "no-store"
    assert "etag" not in response.headers
    again = client.get(url)  # errors are not cached either
    assert again.status_code == response.status_code
    assert files_under(client.settings.cache_dir) == []


def test_unknown_parameter(client):
    error = assert_error(client.get(f"{PHOTO_URL}?w=10&width=10"), 400, "unknown_param")
    assert "width" in error["message"]


def test_repeated_parameter(client):
    error = assert_error(client.get(f"{PHOTO_URL}?w=10&w=20"), 400, "duplicate_param")
    assert "'w'" in error["message"]
    assert_error(client.get(f"{PHOTO_URL}?fm=png&w=10&fm=webp"), 400, "duplicate_param")


@pytest.mark.parametrize("query", ["w=10&dl=a.jpg&dl=b.jpg", "w=10&exp=1&exp=2"])
def test_repeated_response_and_signature_parameters(client, query):
    """The API promises "unknown or repeated parameters are a 400" for all of them."""
    assert_error(client.get(f"{PHOTO_URL}?{query}"), 400, "duplicate_param")


@pytest.mark.parametrize("query", [
    "w=abc", "w=0", "w=-5", "w=70000", "w=1.5", "h=", "fit=bogus", "crop=middle", "q=0",
    "q=101", "blur=0.0001&blur=1", "blur=1000", "sharp=11", "dpr=0", "dpr=6", "dpr=nan",
    "fm=bmp", "bg=zzz", "rect=1,2,3", "pad=1,2", "pad=-1", "page=0", "flip=x", "rot=400",
    "upscale=maybe", "mark-alpha=200&mark=x", "trim=999", f"dl={'x' * 300}",
])
def test_bad_values_are_400(client, query):
    response = client.get(f"{PHOTO_URL}?{query}")
    assert_error(response, 400)
    assert files_under(client.settings.cache_dir) == []


@pytest.mark.parametrize("path", [
    "/img/..%2F..%2Fetc%2Fpasswd",
    "/img/..%2Fsecret.txt",
    "/img/%2E%2E%2Fsecret.txt",
    "/img/photos%2F..%2F..%2Fsecret.txt",
    "/img/%2Fetc%2Fpasswd",
    "/img//etc/passwd",
    "/img/photos%5C..%5C..%5Csecret.txt",
    "/img/a%5Cb.jpg",
    "/img/a%00b.jpg",
    "/img/photos/%00",
    "/img/",
])
def test_traversal_and_bad_keys_are_400_bad_key(client, path):
    (client.settings.data_dir / "secret.txt").write_text("canary")
    response = client.get(path)
    assert_error(response, 400, "bad_key")
    assert b"canary" not in response.content


@pytest.mark.parametrize("raw", [
    b"/img/../secret.txt", b"/img/a/../../secret.txt", b"/img/photos/../../secret.txt",
    b"/img/./photos/x.jpg", b"/img/photos//x.jpg", b"/img/..",
])
def test_dot_segments_sent_raw_are_400_bad_key(client, raw):
    """Clients normalise `..` away; a raw request (curl --path-as-is) keeps it."""
    (client.settings.data_dir / "secret.txt").write_text("canary")
    status, headers, body = raw_get(client.app, raw)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert b'"bad_key"' in body and b"canary" not in body


def test_dots_inside_a_name_are_just_a_name(client):
    assert_error(client.get("/img/photos/a..b.jpg"), 404, "source_not_found")


def test_keys_with_spaces_and_unicode_work(client):
    target = client.settings.storage_dir / "albums" / "été 2024" / "my photo #1?.jpg"
    target.parent.mkdir(parents=True)
    shutil.copyfile(CORPUS / PHOTO["path"], target)
    response = client.get(f"/img/{quote('albums/été 2024/my photo #1?.jpg')}?w=50")
    assert response.status_code == 200, response.text
    assert image_size(response.content)[0] == 50
    assert "filename*=UTF-8''my%20photo%20%231%3F.jpg" in response.headers["content-disposition"]


def test_missing_source_is_404(client):
    error = assert_error(client.get("/img/photos/nope.jpg?w=10"), 404, "source_not_found")
    assert "nope.jpg" in error["message"]
    assert_error(client.get("/img/no/such/folder/x.jpg"), 404, "source_not_found")
    assert_error(client.get("/img/photos"), 404, "source_not_found")  # a folder is no object


def test_etag_and_if_none_match_give_304(client):
    first = client.get(f"{PHOTO_URL}?w=80")
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    for given in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = client.get(f"{PHOTO_URL}?w=80", headers={"If-None-Match": given})
        assert again.status_code == 304, given
        assert again.headers["etag"] == etag
        assert again.content == b""
        assert again.headers["cache-control"] == first.headers["cache-control"]
    other = client.get(f"{PHOTO_URL}?w=80", headers={"If-None-Match": '"stale"'})
    assert other.status_code == 200 and other.content == first.content
    assert client.get(f"{PHOTO_URL}?w=81").headers["etag"] != etag


def test_304_for_a_missing_source_is_still_404(client):
    response = client.get("/img/photos/nope.jpg", headers={"If-None-Match": "*"})
    assert_error(response, 404, "source_not_found")


def test_replacing_the_source_changes_etag_and_pixels(client):
    target = client.settings.storage_dir / "replaced.jpg"
    shutil.copyfile(CORPUS / PHOTO["path"], target)
    first = client.get("/img/replaced.jpg?h=50")
    tmp = target.with_name("tmp-copy")
    shutil.copyfile(CORPUS / ROTATED["path"], tmp)
    os.replace(tmp, target)
    second = client.get("/img/replaced.jpg?h=50", headers={"If-None-Match": first.headers["etag"]})
    assert second.status_code == 200
    assert second.headers["etag"] != first.headers["etag"]
    assert second.headers["x-cache"] == "MISS"
    assert image_size(second.content) == (round(50 * ROTATED["display_width"]
                                                 / ROTATED["display_height"]), 50)


def test_second_request_is_a_cache_hit_with_the_same_bytes(client):
    url = f"{PHOTO_URL}?w=90&fm=webp"
    first = client.get(url)
    assert first.headers["x-cache"] == "MISS"
    written = files_under(client.settings.cache_dir)
    assert len(written) == 1 and written[0].read_bytes() == first.content
    second = client.get(url)
    assert second.headers["x-cache"] == "HIT"
    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["content-type"] == "image/webp"
    # The same parameters in another order are the same derivative.
    third = client.get(f"{PHOTO_URL}?fm=webp&w=90")
    assert third.headers["x-cache"] == "HIT" and third.headers["etag"] == first.headers["etag"]
    assert len(files_under(client.settings.cache_dir)) == 1


def test_without_result_cache_nothing_is_written(make_client):
    client = make_client(result_cache=False)
    for _ in range(2):
        response = client.get(f"{PHOTO_URL}?w=40")
        assert response.status_code == 200 and response.headers["x-cache"] == "MISS"
    assert files_under(client.settings.cache_dir) == []


def test_head_gives_the_headers_without_a_body(client):
    url = f"{PHOTO_URL}?w=70&fm=png"
    get = client.get(url)
    for _ in range(2):  # a miss, then a hit
        head = client.head(url)
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len(get.content))
        for name in ("etag", "content-type", "cache-control", "content-disposition"):
            assert head.headers[name] == get.headers[name]
    error = client.head("/img/photos/nope.jpg")
    assert error.status_code == 404 and error.content == b""
    assert error.headers["content-type"] == "application/json"


def test_other_methods_are_405(client):
    for method in ("POST", "PUT", "DELETE"):
        assert_error(client.request(method, PHOTO_URL), 405, "method_not_allowed")


@pytest.mark.parametrize(("accept", "mime"), [
    ("image/avif,image/webp,image/apng,*/*;q=0.8", "image/avif"),
    ("image/webp,*/*", "image/webp"),
    ("image/jpeg,image/*;q=0.5", "image/jpeg"),
    (None, "image/jpeg"),
])
def test_fm_auto_negotiates_from_accept(client, accept, mime):
    headers = {"Accept": accept} if accept else {}
    response = client.get(f"{PHOTO_URL}?w=60&fm=auto", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == mime
    assert response.headers["vary"] == "Accept"
    assert image_size(response.content)[0] == 60


def test_fm_auto_variants_have_distinct_etags_and_cache_entries(client):
    etags = set()
    for accept in ("image/avif,image/webp", "image/webp", "text/html"):
        response = client.get(f"{PHOTO_URL}?w=60&fm=auto", headers={"Accept": accept})
        etags.add(response.headers["etag"])
        again = client.get(f"{PHOTO_URL}?w=60&fm=auto", headers={"Accept": accept})
        assert again.headers["x-cache"] == "HIT"
        assert again.headers["content-type"] == response.headers["content-type"]
    assert len(etags) == 3
    assert len(files_under(client.settings.cache_dir)) == 3


def test_fm_auto_keeps_alpha_without_modern_formats(client):
    response = client.get(f"/img/{ALPHA_PNG['path']}?w=50&fm=auto", headers={"Accept": "*/*"})
    assert response.headers["content-type"] == "image/png"


def test_explicit_format_has_no_vary(client):
    assert "vary" not in client.get(f"{PHOTO_URL}?w=60&fm=webp").headers


def test_content_disposition_inline_with_the_output_extension(client):
    stem = PHOTO["path"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
    cases = {"fm=webp": "webp", "fm=png": "png", "fm=jpeg": "jpg", "w=10": "jpg",
             "fm=tiff": "tif"}
    for query, ext in cases.items():
        disposition = client.get(f"{PHOTO_URL}?{query}").headers["content-disposition"]
        assert disposition.startswith(f'inline; filename="{stem}.{ext}"'), disposition


def test_dl_makes_an_attachment(client):
    response = client.get(f"{PHOTO_URL}?w=10&fm=webp&dl=holiday.jpg")
    assert response.headers["content-disposition"].startswith(
        'attachment; filename="holiday.webp"')
    unicode = client.get(f"{PHOTO_URL}?w=10&dl={quote('été à la mer')}")
    disposition = unicode.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=\"")
    assert "filename*=UTF-8''%C3%A9t%C3%A9%20%C3%A0%20la%20mer.jpg" in disposition
    evil = quote('a"; filename=evil.exe')
    hostile = client.get(f"{PHOTO_URL}?w=10&dl={evil}")
    assert hostile.headers["content-disposition"].count("filename=") == 1
    empty = client.get(f"{PHOTO_URL}?w=10&dl=")
    assert empty.headers["content-disposition"].startswith("attachment; filename=\"")


def test_cache_control_is_configurable(make_client):
    default = make_client()
    assert default.get(f"{PHOTO_URL}?w=10").headers["cache-control"] == "public, max-age=86400"
    custom = make_client(cache_control="public, max-age=60, immutable")
    response = custom.get(f"{PHOTO_URL}?w=10")
    assert response.headers["cache-control"] == "public, max-age=60, immutable"
    not_modified = custom.get(f"{PHOTO_URL}?w=10",
                              headers={"If-None-Match": response.headers["etag"]})
    assert not_modified.headers["cache-control"] == "public, max-age=60, immutable"
    assert custom.get("/img/photos/nope.jpg").headers["cache-control"] == "no-store"


def _pixel(data: bytes, x: int, y: int) -> list[float]:
    image = pyvips.Image.new_from_buffer(data, "").colourspace("srgb")  # 8 bits a sample
    return image(x if x >= 0 else image.width + x, y if y >= 0 else image.height + y)[:3]


def test_watermark_from_storage(client):
    plain = client.get(f"{PATH_MARK}&fm=png")
    marked = client.get(f"{PATH_MARK}&fm=png&mark={quote(FLAG['path'])}&mark-w=0.5")
    assert marked.status_code == 200, marked.text
    assert image_size(marked.content) == image_size(plain.content)
    flag = (CORPUS / FLAG["path"]).read_bytes()
    corner = _pixel(flag, -1, -1)
    assert all(abs(a - b) <= 8 for a, b in zip(_pixel(marked.content, -1, -1), corner))
    assert _pixel(plain.content, -1, -1) != _pixel(marked.content, -1, -1)
    assert marked.headers["etag"] != plain.headers["etag"]


def test_watermark_errors(client):
    assert_error(client.get(f"{PATH_MARK}&mark=nope.png"), 404, "watermark_not_found")
    assert_error(client.get(f"{PATH_MARK}&mark=..%2Fsecret.png"), 400, "bad_key")
    bomb = next(f for f in REJECT_FILES if "bomb" in f["traits"])
    assert_error(client.get(f"{PATH_MARK}&mark={quote(bomb['path'])}"), 413)
    assert files_under(client.settings.cache_dir) == []


def test_replacing_the_watermark_changes_etag_and_pixels(client):
    logo = client.settings.storage_dir / "logo.png"
    shutil.copyfile(CORPUS / FLAG["path"], logo)
    url = f"{PATH_MARK}&fm=png&mark=logo.png&mark-w=0.5"
    first = client.get(url)
    assert client.get(url).headers["x-cache"] == "HIT"
    tmp = logo.with_name("logo.tmp")
    shutil.copyfile(CORPUS / ALPHA_PNG["path"], tmp)
    os.replace(tmp, logo)
    second = client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert second.status_code == 200, "a stale derivative was served as not modified"
    assert second.headers["etag"] != first.headers["etag"]
    assert second.headers["x-cache"] == "MISS"
    assert second.content != first.content


def test_too_many_query_parameters_is_400(client):
    query = "&".join(f"w={i}" for i in range(100))
    assert_error(client.get(f"{PHOTO_URL}?{query}"), 400, "bad_param")
