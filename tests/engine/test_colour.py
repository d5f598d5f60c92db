"""Kept colour transforms: the same colours as libvips's own, built once per profile, an
sRGB profile under another name skipped, and libvips left whatever does not fit."""

from __future__ import annotations

import time

import pytest
import pyvips

from darkroom.engine import colour
from darkroom.engine.budget import Budget
from darkroom.engine.prepare import to_srgb

from corpus_files import CORPUS, OK_FILES


def _small(entry: dict) -> pyvips.Image:
    return pyvips.Image.new_from_file(str(CORPUS / entry["path"]), shrink=8)


def _profile(name: str) -> bytes:
    return pyvips.Operation.call("profile_load", name)


def _tagged(image: pyvips.Image, profile: bytes) -> pyvips.Image:
    tagged = image.copy()
    tagged.set_type(pyvips.GValue.blob_type, "icc-profile-data", profile)
    return tagged


def _libvips(image: pyvips.Image) -> pyvips.Image:
    cmyk = image.interpretation == "cmyk"
    return image.icc_transform("srgb", embedded=True, intent="perceptual",
                               input_profile="cmyk" if cmyk else "srgb")


def _photo(width: int, height: int) -> pyvips.Image:
    """A smooth colourful image (every channel varies)."""
    x, y = pyvips.Image.xyz(width, height).bandsplit()
    return (x * 255 / width).bandjoin([y * 255 / height, (x + y) * 127 / (width + height)]
                                      ).cast("uchar").copy(interpretation="srgb")


MANAGED = [f for f in OK_FILES if f["container"] == "jpeg" and f["frames"] == 1
           and ("icc-profile-data" in _small(f).get_fields()
                or _small(f).interpretation == "cmyk")]


@pytest.mark.parametrize("entry", MANAGED, ids=lambda e: e["path"])
def test_kept_transforms_give_libvips_colours(entry):
    image = _small(entry)
    converted = to_srgb(image)
    assert (converted.bands, converted.format, converted.interpretation) == (3, "uchar", "srgb")
    assert (converted - _libvips(image)).abs().max() <= 2  # the same lcms, the same profiles


def test_the_corpus_has_a_cmyk_and_a_profiled_rgb_photo():
    assert {_small(f).interpretation for f in MANAGED} >= {"cmyk", "srgb"}


def test_an_srgb_profile_is_skipped_at_any_size():
    big = _tagged(_photo(800, 500), _profile("srgb"))
    assert big.width * big.height > colour.MAX_PIXELS["RGB"]
    skipped = colour.cached_to_srgb(big, colour.look(big), may_drop_fields=False)
    assert skipped is not None and (skipped - big).abs().max() == 0
    assert (skipped - _libvips(big)).abs().max() <= 1
    assert skipped.get("icc-profile-data") == _profile("srgb")  # kept, it is sRGB


def test_a_wide_gamut_profile_is_applied_on_small_images_only():
    small = _tagged(_photo(300, 200), _profile("p3"))
    converted = colour.cached_to_srgb(small, colour.look(small), may_drop_fields=True)
    assert converted is not None and (converted - small).abs().max() > 3  # really converted
    assert (converted - _libvips(small)).abs().max() <= 2
    # the metadata must stay
    assert colour.cached_to_srgb(small, colour.look(small), may_drop_fields=False) is None
    large = _tagged(_photo(800, 500), _profile("p3"))
    # libvips streams it
    assert colour.cached_to_srgb(large, colour.look(large), may_drop_fields=True) is None


def test_a_profile_lcms_refuses_is_left_to_libvips():
    image = _tagged(pyvips.Image.black(8, 8, bands=3).copy(interpretation="srgb"),
                    b"not a profile" * 20)
    assert colour.cached_to_srgb(image, colour.look(image), may_drop_fields=True) is None
    converted = to_srgb(image)  # libvips refuses it too, then converts without it
    assert (converted.bands, converted.format, converted.max()) == (3, "uchar", 0)


def test_transforms_are_built_once_per_profile_and_bounded():
    p3 = _profile("p3")
    image = _photo(8, 8)
    colour._verdicts.clear()
    for n in range(colour.CACHED + 4):
        # the same profile with another byte in its (unused) reserved header field
        profile = p3[:100] + bytes([n]) + p3[101:]
        for _ in range(2):
            colour.cached_to_srgb(tagged := _tagged(image, profile), colour.look(tagged),
                                 may_drop_fields=True)
        assert len(colour._verdicts) == min(n + 1, colour.CACHED)


def test_images_that_are_not_8_bit_rgb_or_cmyk_are_left_to_libvips():
    p3 = _profile("p3")
    rgba = _tagged(_photo(8, 8).bandjoin(255).copy(interpretation="srgb"), p3)
    sixteen = _tagged(_photo(8, 8).cast("ushort").copy(interpretation="rgb16"), p3)
    for image in (rgba, sixteen):
        assert colour.cached_to_srgb(image, colour.look(image), may_drop_fields=True) is None


def _cmyk(entry_trait: str = "cmyk") -> pyvips.Image:
    entry = next(f for f in OK_FILES if entry_trait in f["traits"])
    return pyvips.Image.new_from_file(str(CORPUS / entry["path"]))


def test_a_kept_transform_keeps_the_resolution():
    image = _cmyk().copy(xres=300 / 25.4, yres=150 / 25.4)
    converted = colour.cached_to_srgb(image, colour.look(image), may_drop_fields=True)
    assert converted is not None and (converted.xres, converted.yres) == (image.xres, image.yres)


def test_no_cmyk_transform_is_built_when_it_would_not_be_used():
    image = _cmyk()
    colour._verdicts.clear()
    assert colour.cached_to_srgb(image, colour.look(image), may_drop_fields=False) is None
    big = image.resize(3)
    assert big.width * big.height > colour.MAX_PIXELS["CMYK"]
    assert colour.cached_to_srgb(big, colour.look(big), may_drop_fields=True) is None
    assert len(colour._verdicts) == 0


def test_an_empty_profile_blob_is_left_to_libvips():
    image = _tagged(_photo(8, 8), b"")
    assert colour.cached_to_srgb(image, colour.look(image), may_drop_fields=True) is None
    converted = to_srgb(image)
    assert (converted.bands, converted.format) == (3, "uchar")


def test_the_pixels_computed_here_are_under_the_time_budget():
    budget = Budget(0.0)  # already past its deadline
    budget.watch(pyvips.Image.black(1, 1))  # armed: the watchdog expires it at once
    for _ in range(1000):  # (its thread may be slow to run on a loaded machine)
        if budget.killed:
            break
        time.sleep(0.01)
    assert budget.killed
    with pytest.raises(pyvips.Error):  # the transform's pixels are watched by it too
        to_srgb(_cmyk(), True, budget)
    budget.release()
