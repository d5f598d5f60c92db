"""Steps that change size or shape, checked on synthetic images with known colours."""

from __future__ import annotations

import pytest
import pyvips
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from darkroom.engine.geometry import final_size
from darkroom.errors import BadRequest
from darkroom.plan import Extract, Flip, Pad, Resize, Rotate, Trim

from ..helpers import (
    BLUE, GREEN, GREY, LOSSLESS, RED, WHITE, assert_colour, decode, halves, pixel, run,
    one, read, run_image, solid, stacked, with_square,
)

# ---- resize: sizes -------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(20, 400), height=st.integers(20, 400),
    box_w=st.one_of(st.none(), st.integers(10, 400)), box_h=st.integers(10, 400),
    fit=st.sampled_from(["cover", "contain", "fill", "inside", "outside"]),
    upscale=st.booleans(), turns=st.sampled_from([0, 90, 270]),
    fmt=st.sampled_from(["png", "jpeg", "webp"]),
)
def test_rendered_size_is_final_size(width, height, box_w, box_h, fit, upscale, turns, fmt):
    # JPEG and WebP sources are shrunk on load: a quarter turn before the resize must not
    # skew the arithmetic.
    image = solid(width, height, GREY)
    data = {"png": image.pngsave_buffer, "jpeg": image.jpegsave_buffer,
            "webp": image.webpsave_buffer}[fmt]()
    op = Resize(width=box_w, height=box_h, fit=fit, upscale=upscale)
    ops = ((Rotate(angle=turns),) if turns else ()) + (op,)
    result = run(data, *ops)
    w, h = (height, width) if turns else (width, height)
    assert (result.width, result.height) == final_size(w, h, op)
    assert (decode(result.data).width, decode(result.data).height) == final_size(w, h, op)


@pytest.mark.parametrize(("fmt", "width", "height", "turn", "op", "size"), [
    ("jpeg", 616, 531, 270, Resize(width=125, fit="cover"), (125, 145)),
    ("webp", 607, 626, 90, Resize(height=364, fit="fill"), (375, 364)),
])
def test_quarter_turn_after_a_shrink_on_load(fmt, width, height, turn, op, size):
    # Shrink-on-load rounds each side on its own; the turn must carry that along.
    data = solid(width, height, GREY).write_to_buffer(f".{fmt}")
    result = run(data, Rotate(angle=turn), op)
    assert (result.width, result.height) == size


THIN_SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="6" height="660">'
            b'<rect width="6" height="660" fill="red"/></svg>')


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png", "svg"])
def test_thin_strip_shrinks_to_one_pixel_wide(fmt):
    # a 6x660 strip to 32 high is 0.29 px wide: the loader must not be asked for 0 px
    data = THIN_SVG if fmt == "svg" else solid(6, 660, RED).write_to_buffer(f".{fmt}")
    result = run(data, Resize(height=32))
    assert (result.width, result.height) == (1, 32)


def test_exif_orientation_and_a_turn_before_a_resize():
    result = run(read(one("exif-orientation-6")), Rotate(angle=90), Resize(width=150))
    assert (result.width, result.height) == (150, 100)  # upright 1200x1800, turned 1800x1200


# ---- resize: fits --------------------------------------------------------------------


def test_cover_crops_to_the_exact_box():
    result, image = run_image(halves(), Resize(width=100, height=100, fit="cover"))
    assert (image.width, image.height) == (100, 100)
    assert_colour(pixel(image, 5, 50), RED, LOSSLESS, "left edge")
    assert_colour(pixel(image, 94, 50), BLUE, LOSSLESS, "right edge")


def test_contain_pads_with_the_background_colour():
    _, image = run_image(halves(), Resize(width=300, height=300, fit="contain",
                                          background="00ff00"))
    assert (image.width, image.height) == (300, 300)
    assert_colour(pixel(image, 150, 10), GREEN, LOSSLESS, "top bar")
    assert_colour(pixel(image, 150, 290), GREEN, LOSSLESS, "bottom bar")
    assert_colour(pixel(image, 20, 150), RED, LOSSLESS, "image, left")
    assert_colour(pixel(image, 280, 150), BLUE, LOSSLESS, "image, right")


def test_contain_bars_are_transparent_by_default():
    _, image = run_image(halves(), Resize(width=200, height=200, fit="contain"))
    assert image.bands == 4
    assert pixel(image, 100, 5)[3] == 0
    assert pixel(image, 100, 100)[3] == 255


def test_contain_without_upscale_centres_the_unscaled_image():
    _, image = run_image(halves(), Resize(width=300, height=300, fit="contain", upscale=False,
                                          background="white"))
    assert (image.width, image.height) == (300, 300)
    assert_colour(pixel(image, 51, 150), RED, LOSSLESS, "image starts at x=50")
    assert_colour(pixel(image, 48, 150), WHITE, LOSSLESS, "bar left of the image")
    assert_colour(pixel(image, 150, 99), WHITE, LOSSLESS, "bar above the image")


def test_fill_stretches_without_cropping():
    _, image = run_image(halves(), Resize(width=100, height=300, fit="fill"))
    assert (image.width, image.height) == (100, 300)
    assert_colour(pixel(image, 10, 290), RED, LOSSLESS, "left")
    assert_colour(pixel(image, 90, 10), BLUE, LOSSLESS, "right")


@pytest.mark.parametrize(("fit", "size"), [("inside", (100, 50)), ("outside", (200, 100))])
def test_inside_and_outside(fit, size):
    result, _ = run_image(halves(400, 200), Resize(width=100, height=100, fit=fit))
    assert (result.width, result.height) == size


# ---- resize: gravity and smart crops -------------------------------------------------


@pytest.mark.parametrize(("gravity", "colour"), [
    ("north", GREEN), ("south", RED), ("northeast", GREEN), ("southwest", RED),
])
def test_cover_gravity_keeps_that_side(gravity, colour):
    _, image = run_image(stacked(), Resize(width=100, height=100, fit="cover",
                                           gravity=gravity))
    for y in (2, 50, 97):
        assert_colour(pixel(image, 50, y), colour, LOSSLESS, f"row {y}")


def test_cover_centre_keeps_both_halves():
    _, image = run_image(stacked(), Resize(width=100, height=100, fit="cover"))
    assert_colour(pixel(image, 50, 2), GREEN, LOSSLESS, "top")
    assert_colour(pixel(image, 50, 97), RED, LOSSLESS, "bottom")


@pytest.mark.parametrize(("focal", "colour"), [((0.9, 0.5), BLUE), ((0.1, 0.5), RED)])
def test_focal_point_picks_the_crop(focal, colour):
    _, image = run_image(halves(400, 100), Resize(width=100, height=100, fit="cover",
                                                  gravity="focal", focal=focal))
    for x in (2, 50, 97):
        assert_colour(pixel(image, x, 50), colour, LOSSLESS, f"column {x}")


@pytest.mark.parametrize("gravity", ["attention", "entropy"])
def test_smart_crop_finds_the_busy_corner(gravity):
    base = solid(400, 100, GREY)
    busy = pyvips.Image.gaussnoise(60, 60, mean=128, sigma=90).cast("uchar")
    source = base.insert(busy.bandjoin([busy, solid(60, 60, RED).extract_band(0)]), 330, 20)
    _, image = run_image(source.copy(interpretation="srgb"),
                         Resize(width=100, height=100, fit="cover", gravity=gravity))
    assert (image.width, image.height) == (100, 100)
    assert image.deviate() > 20  # the flat grey left side would have no deviation


# ---- extract -------------------------------------------------------------------------


def test_extract_in_bounds():
    _, image = run_image(halves(), Extract(left=90, top=10, width=20, height=30))
    assert (image.width, image.height) == (20, 30)
    assert_colour(pixel(image, 2, 5), RED, LOSSLESS, "left of the seam")
    assert_colour(pixel(image, 17, 5), BLUE, LOSSLESS, "right of the seam")


def test_extract_partly_outside_is_clipped():
    result, _ = run_image(halves(), Extract(left=150, top=50, width=500, height=500))
    assert (result.width, result.height) == (50, 50)


def test_extract_fully_outside_is_400():
    with pytest.raises(BadRequest) as raised:
        run_image(halves(), Extract(left=200, top=0, width=10, height=10))
    assert (raised.value.status, raised.value.code) == (400, "crop_out_of_bounds")


# ---- rotate and flip -----------------------------------------------------------------

MARKED = with_square(solid(200, 100, WHITE), GREEN, 0, 0, 10)  # green square top-left


@pytest.mark.parametrize(("angle", "size", "marker"), [
    (90, (100, 200), (94, 5)),     # clockwise: top-left goes top-right
    (-270, (100, 200), (94, 5)),
    (180, (200, 100), (194, 94)),
    (270, (100, 200), (5, 194)),   # top-left goes bottom-left
    (-90, (100, 200), (5, 194)),
])
def test_quarter_turns_move_the_marker(angle, size, marker):
    _, image = run_image(MARKED, Rotate(angle=angle))
    assert (image.width, image.height) == size
    assert_colour(pixel(image, *marker), GREEN, LOSSLESS, "marker")
    assert_colour(pixel(image, 5, 5), WHITE, LOSSLESS, "old corner")


def test_thirty_degrees_fills_corners_with_the_background():
    result, image = run_image(solid(200, 100, WHITE), Rotate(angle=30, background="ff0000"))
    # the bounding box of a 200x100 rectangle turned 30 degrees is about 223x187
    assert abs(image.width - 223) <= 2 and abs(image.height - 187) <= 2
    assert_colour(pixel(image, 0, 0), RED, LOSSLESS, "corner")
    assert_colour(pixel(image, image.width // 2, image.height // 2), WHITE, LOSSLESS, "middle")


def test_thirty_degrees_is_clockwise():
    # Turned clockwise about the centre, the top-left corner of a 200x100 image lands on the
    # top edge about 50 px in; turned counter-clockwise it would land on the left edge.
    _, image = run_image(MARKED, Rotate(angle=30, background="000000"))
    marker = (image.extract_band(1) > 200) & (image.extract_band(0) < 50)
    assert marker.crop(35, 0, 35, 20).max() > 0
    assert marker.crop(0, 60, 30, 80).max() == 0


def test_odd_angle_transparent_corners():
    _, image = run_image(solid(100, 100, WHITE), Rotate(angle=45))
    assert image.bands == 4
    assert pixel(image, 0, 0)[3] == 0
    assert pixel(image, image.width // 2, image.height // 2)[3] == 255


@pytest.mark.parametrize(("horizontal", "vertical", "marker"), [
    (True, False, (194, 5)), (False, True, (5, 94)), (True, True, (194, 94)),
])
def test_flip(horizontal, vertical, marker):
    _, image = run_image(MARKED, Flip(horizontal=horizontal, vertical=vertical))
    assert (image.width, image.height) == (200, 100)
    assert_colour(pixel(image, *marker), GREEN, LOSSLESS, "marker")
    assert_colour(pixel(image, 5, 5), WHITE, LOSSLESS, "old corner")


# ---- trim and pad --------------------------------------------------------------------


def test_trim_removes_a_uniform_border():
    framed = halves().embed(20, 15, 240, 130, extend="background", background=list(GREEN))
    _, image = run_image(framed, Trim())
    assert (image.width, image.height) == (200, 100)
    assert_colour(pixel(image, 0, 0), RED, LOSSLESS, "top-left is the old content")


def test_trim_with_an_explicit_background_and_alpha():
    content = halves().bandjoin_const([255])
    framed = content.embed(10, 10, 220, 120, extend="background", background=[0, 0, 0, 0])
    _, image = run_image(framed, Trim(background="00000000"))
    assert (image.width, image.height) == (200, 100)


def test_trim_of_a_flat_image_keeps_it():
    result, _ = run_image(solid(50, 40, GREY), Trim())
    assert (result.width, result.height) == (50, 40)


def test_pad_adds_coloured_edges():
    _, image = run_image(halves(), Pad(top=10, right=20, bottom=30, left=40, color="00ff00"))
    assert (image.width, image.height) == (260, 140)
    for x, y in [(5, 70), (255, 70), (130, 3), (130, 135)]:
        assert_colour(pixel(image, x, y), GREEN, LOSSLESS, f"edge {x},{y}")
    assert_colour(pixel(image, 45, 15), RED, LOSSLESS, "content moved by left/top")


def test_pad_default_is_transparent():
    _, image = run_image(halves(), Pad(left=10))
    assert image.bands == 4
    assert pixel(image, 2, 50)[3] == 0
    assert pixel(image, 20, 50)[3] == 255
