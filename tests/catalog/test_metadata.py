"""Descriptors read from an image: header facts, EXIF subset, colours, BlurHash, pHash."""

from __future__ import annotations

from urllib.parse import parse_qsl

import numpy as np
import pytest
import pyvips

from darkroom.catalog import blurhash
from darkroom.catalog.metadata import AVERAGED, describe, descriptors, perceptual_hash
from darkroom.config import Limits
from darkroom.engine import render
from darkroom.errors import DarkroomError
from darkroom.grammars import native

from corpus_files import CORPUS, OK_FILES, REJECT_FILES

LIMITS = Limits()


def one(trait: str) -> dict:
    return next(f for f in OK_FILES if trait in f["traits"])


def test_blurhash_layout_of_a_solid_colour():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    text = blurhash.encode(red)
    # 4x3 components: size flag "L", then the DC term #ff0000 in base 83, then 11 ACs.
    assert (text[0], text[2:6], len(text)) == ("L", "TI:j", 28)
    assert blurhash.encode(red, 1, 1) == "00TI:j"


def _factors_by_definition(pixels: np.ndarray, xs: int, ys: int) -> np.ndarray:
    """BlurHash's factors as its specification writes them: one weighted mean per
    component, over sRGB levels made linear one pixel at a time."""
    height, width = pixels.shape[:2]
    c = pixels.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    out = []
    for j in range(ys):
        for i in range(xs):
            basis = np.outer(np.cos(np.pi * j * np.arange(height) / height),
                             np.cos(np.pi * i * np.arange(width) / width))
            norm = 1.0 if i == j == 0 else 2.0
            out.append(norm * (linear * basis[..., None]).sum(axis=(0, 1)) / (width * height))
    return np.array(out)


@pytest.mark.parametrize("seed", range(5))
def test_blurhash_factors_match_the_definition(seed):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (int(rng.integers(1, 65)), int(rng.integers(1, 65)), 3),
                          dtype=np.uint8)
    expected = _factors_by_definition(pixels, 4, 3)
    assert np.allclose(blurhash.factors(pixels, 4, 3), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("entry", OK_FILES, ids=lambda e: e["path"])
def test_every_accepted_corpus_file_is_described(entry):
    facts = describe(CORPUS / entry["path"], LIMITS)
    assert (facts.header.width, facts.header.height) == (entry["width"], entry["height"])
    assert len(facts.blurhash) == 28 and len(facts.phash) == 16
    shares = [c["share"] for c in facts.colours]
    assert 1 <= len(shares) <= 5 and all(s > 0 for s in shares)
    assert shares == sorted(shares, reverse=True)  # most common first
    assert sum(shares) <= 1.001  # rounded to 4 places each
    if len(shares) < 5:  # every pixel fell in one of the buckets listed
        assert abs(sum(shares) - 1) <= 0.001
    assert facts == describe(CORPUS / entry["path"], LIMITS)  # stable


@pytest.mark.parametrize("entry", REJECT_FILES, ids=lambda e: e["path"])
def test_every_refused_corpus_file_raises_a_client_error(entry):
    with pytest.raises(DarkroomError) as err:
        describe(CORPUS / entry["path"], LIMITS)
    assert 400 <= err.value.status < 500


def test_exif_subset():
    exif = describe(CORPUS / one("exif-orientation-6")["path"], LIMITS).exif
    assert exif["orientation"] == 6 and isinstance(exif["gps"], bool)
    assert describe(CORPUS / one("alpha")["path"], LIMITS).exif == {}


def test_a_broken_exif_block_never_fails(tmp_path):
    jpeg = next(f for f in OK_FILES if f["container"] == "jpeg")
    data = (CORPUS / jpeg["path"]).read_bytes()
    broken = data[:2] + b"\xff\xe1\x00\x10Exif\x00\x00MM\x00*\xff\xff" + data[2:]
    path = tmp_path / "broken.jpg"
    path.write_bytes(broken)
    assert describe(path, LIMITS).header.format == "jpeg"


def test_dominant_colour_of_a_flat_image(tmp_path):
    path = tmp_path / "blue.png"
    pyvips.Image.black(40, 30).new_from_image([10, 20, 200]).pngsave(str(path))
    facts = describe(path, LIMITS)
    assert facts.colours == [{"hex": "#0a14c8", "share": 1.0}]


def test_perceptual_hash_survives_a_resize(tmp_path):
    source = CORPUS / one("single-face")["path"]
    smaller = tmp_path / "small.jpg"
    pyvips.Image.thumbnail(str(source), 300).jpegsave(str(smaller), Q=70)
    first = int(describe(source, LIMITS).phash, 16)
    second = int(describe(smaller, LIMITS).phash, 16)
    assert bin(first ^ second).count("1") <= 8
    other = int(describe(CORPUS / one("flat-colour")["path"], LIMITS).phash, 16)
    assert bin(first ^ other).count("1") > 16


def test_descriptors_agree_whether_averaged_in_memory_or_shrunk_by_libvips():
    """Up to AVERAGED pixels an image is averaged in memory, past them libvips shrinks it
    first (streaming): one picture on either side of the line is described alike."""
    photo = pyvips.Image.new_from_file(str(CORPUS / one("exif-orientation-6")["path"])
                                       ).autorot()  # upright, as describe's images are
    large = photo.resize(1.2 * (AVERAGED / (photo.width * photo.height)) ** 0.5)
    small = photo.resize(0.8 * (AVERAGED / (photo.width * photo.height)) ** 0.5)
    assert large.width * large.height > AVERAGED >= small.width * small.height
    (big_colours, big_blur, big_phash), (colours, blur, phash) = map(descriptors, (large, small))
    assert _hamming(big_phash, phash) <= 2
    assert (big_blur[0], big_blur[2:6]) == (blur[0], blur[2:6])  # components, mean colour
    for big, small_colour in zip(big_colours[:2], colours[:2], strict=True):
        assert _levels_apart(big["hex"], small_colour["hex"]) <= 2  # the same colours


@pytest.mark.parametrize("bands, size", [(1, (40, 30)), (2, (40, 30)), (3, (1, 7)),
                                         (4, (300, 200)), (1, (1200, 1000))])
def test_descriptors_of_grey_transparent_and_tiny_images(bands, size):
    """Grey is taken as three equal channels and full transparency as white; a sliver or
    a large grey image is described like any other."""
    grey = pyvips.Image.black(*size) + 100
    colour = grey.bandjoin([grey, grey]) if bands >= 3 else grey
    image = colour.bandjoin(pyvips.Image.black(*size)) if bands in (2, 4) else colour
    colours, blur, phash = descriptors(image.cast("uchar").copy(
        interpretation="b-w" if bands < 3 else "srgb"))
    expected = "#ffffff" if bands in (2, 4) else "#646464"
    assert colours == [{"hex": expected, "share": 1.0}] and len(blur) == 28 and len(phash) == 16


def test_perceptual_hash_is_64_bits():
    ramp = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))
    assert len(perceptual_hash(ramp)) == 16



def _hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


@pytest.mark.parametrize("trait", ["exif-orientation-6", "cmyk", "alpha", "single-face"])
def test_a_picked_plan_is_rendered_from_the_decode_that_gives_the_descriptors(trait):
    path = CORPUS / next(f for f in OK_FILES if trait in f["traits"] and f["frames"] == 1
                         and f["container"] != "svg")["path"]
    plan = native.parse("x", parse_qsl("w=120&h=120&fit=cover&fm=webp"))
    seen = []
    facts = describe(path, LIMITS, lambda header: seen.append(header) or plan)
    alone = describe(path, LIMITS)
    assert seen == [alone.header] and facts.made is not None
    assert facts.made[0] is plan and facts.made[1] == render(plan, path.read_bytes(), LIMITS)
    assert (facts.header, facts.exif) == (alone.header, alone.exif)
    # the same descriptors but for the scale the source was decoded at
    assert _hamming(facts.phash, alone.phash) <= 6
    assert facts.blurhash[:2] == alone.blurhash[:2]
    assert facts.colours[0]["share"] == pytest.approx(alone.colours[0]["share"], abs=0.1)


def test_a_picked_plan_that_fails_leaves_the_image_described_alone():
    path = CORPUS / one("single-face")["path"]
    plan = native.parse("x", parse_qsl("w=100&page=3"))  # the source has one page
    facts = describe(path, LIMITS, lambda header: plan)
    assert facts.made is None and facts == describe(path, LIMITS)


def test_an_animation_is_described_alone_whatever_plan_is_picked():
    path = CORPUS / next(f for f in OK_FILES if f["frames"] > 1)["path"]
    facts = describe(path, LIMITS, lambda header: native.parse("x", parse_qsl("w=50")))
    assert facts.made is None and facts == describe(path, LIMITS)


@pytest.mark.parametrize("entry", [f for f in REJECT_FILES if "truncated" in f["traits"]],
                         ids=lambda e: e["path"])
def test_a_picked_plan_does_not_let_a_broken_image_in(entry):
    plan = native.parse("x", parse_qsl("w=100"))
    with pytest.raises(DarkroomError) as err:
        describe(CORPUS / entry["path"], LIMITS, lambda header: plan)
    assert err.value.code == "corrupt_image"


def _levels_apart(first: str, second: str) -> int:
    """The largest difference of one channel between two `#rrggbb` colours."""
    return max(abs(int(first[i:i + 2], 16) - int(second[i:i + 2], 16)) for i in (1, 3, 5))
