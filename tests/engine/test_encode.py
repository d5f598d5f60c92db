"""Encoding: every output format, alpha flattening, metadata stripping, quality."""

from __future__ import annotations

import pytest

from darkroom.plan import Resize

from .helpers import (
    BLUE, GREEN, LOSSY, RED, WHITE, assert_colour, corpus, decode, halves, ids, one,
    pixel, png, read, run, sniff,
)

FORMATS = ["jpeg", "png", "webp", "avif", "gif", "tiff"]
HALF_CLEAR = halves(left=(255, 0, 0, 255), right=(0, 0, 255, 0))  # right half transparent


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_encodes(fmt):
    result = run(png(halves()), format=fmt)
    assert (result.format, sniff(result.data)) == (fmt, fmt)
    image = decode(result.data)
    assert (image.width, image.height) == (200, 100)
    assert_colour(pixel(image, 20, 50), RED, 40, "left")  # GIF palettes and AVIF are coarse
    assert_colour(pixel(image, 180, 50), BLUE, 40, "right")


@pytest.mark.parametrize("fmt", ["png", "webp", "avif", "gif", "tiff"])
def test_alpha_survives_where_the_format_has_it(fmt):
    image = decode(run(png(HALF_CLEAR), format=fmt).data)
    assert image.hasalpha()
    assert pixel(image, 180, 50)[-1] == 0
    assert pixel(image, 20, 50)[-1] == 255


@pytest.mark.parametrize(("background", "colour"), [(None, WHITE), ("00ff00", GREEN)])
def test_alpha_into_jpeg_is_flattened_on_the_background(background, colour):
    output = {"background": background} if background else {}
    image = decode(run(png(HALF_CLEAR), format="jpeg", **output).data)
    assert image.bands == 3
    assert_colour(pixel(image, 180, 50), colour, LOSSY, "transparent half")
    assert_colour(pixel(image, 20, 50), RED, LOSSY, "opaque half")


EXIF = corpus(expect="ok", trait="exif")


@pytest.mark.parametrize("entry", EXIF, ids=ids(EXIF))
@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png"])
def test_metadata_is_stripped_by_default(entry, fmt):
    assert "exif-data" in decode(read(entry)).get_fields()
    fields = decode(run(read(entry), Resize(width=100), format=fmt).data).get_fields()
    assert "exif-data" not in fields
    assert "icc-profile-data" not in fields


@pytest.mark.parametrize("entry", EXIF, ids=ids(EXIF))
def test_metadata_is_kept_when_asked(entry):
    image = decode(run(read(entry), Resize(width=100), format="jpeg", keep_metadata=True).data)
    assert "exif-data" in image.get_fields()
    # the pixels are already upright: a kept orientation tag must not turn them again
    assert image.get("orientation") == 1


@pytest.mark.parametrize("trait", ["cmyk", "grayscale", "icc:Adobe RGB (1998)"])
def test_a_kept_profile_describes_the_srgb_pixels(trait):
    source = next(f for f in corpus("ok", trait) if f["format"] == "JPEG")
    image = decode(run(read(source), format="jpeg", keep_metadata=True).data)
    profile = image.get("icc-profile-data")
    assert profile[16:20] == b"RGB "  # the profile's data colour space: not CMYK or grey


def test_polyglot_payloads_do_not_survive_even_with_metadata():
    data = read(one("polyglot"))
    for fmt in FORMATS:
        out = run(data, format=fmt, keep_metadata=True).data
        assert b"<script" not in out.lower() and b"PK\x03\x04" not in out, fmt


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "avif"])
def test_quality_changes_size(fmt):
    photo = read(one("exif-orientation-6"))
    low = run(photo, Resize(width=400), format=fmt, quality=10).data
    high = run(photo, Resize(width=400), format=fmt, quality=90).data
    assert len(low) < len(high)


@pytest.mark.parametrize("fmt", ["webp", "png", "tiff"])
def test_lossless_outputs_keep_every_pixel(fmt):
    source = halves(left=(12, 200, 34), right=(250, 3, 99))
    image = decode(run(png(source), format=fmt, lossless=True).data)
    assert (image.cast("int") - source.cast("int")).abs().max() == 0


def test_lossless_tiff_and_quality_tiff_differ():
    photo = read(one("exif-orientation-6"))
    lossless = run(photo, Resize(width=200), format="tiff").data
    lossy = run(photo, Resize(width=200), format="tiff", quality=50).data
    assert sniff(lossless) == sniff(lossy) == "tiff"
    assert len(lossy) < len(lossless)
    assert_colour(pixel(decode(lossy), 100, 150), pixel(decode(lossless), 100, 150), LOSSY,
                  "same picture")
