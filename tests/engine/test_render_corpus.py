"""The whole engine on the shared corpus: what must render does, what must not is refused."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import pytest
import pyvips
from PIL import Image, ImageCms, ImageOps

from darkroom.errors import BadRequest, DarkroomError
from darkroom.plan import Extract, Resize

from .helpers import (
    CORPUS, corpus, decode, frame_count, ids, mean_colour, one, read, run, sniff,
)

OK = corpus(expect="ok")
REJECT = corpus(expect="reject")
# What each source becomes when the plan names no format (source -> web format).
WEB = {"image/jpeg": "jpeg", "image/png": "png", "image/gif": "gif", "image/webp": "webp",
       "image/avif": "avif", "image/tiff": "png", "image/heic": "jpeg",
       "image/svg+xml": "png", "image/bmp": "png"}
# Why each rejected file is refused, by trait: (status, code).
REFUSAL = {"bomb": (413, "too_many_pixels"), "truncated": (422, "corrupt_image"),
           "empty": (415, "empty_source"), "not-an-image": (415, "unsupported_format"),
           "xxe": (415, "unsafe_svg")}


def refusal(entry: dict) -> tuple[int, str]:
    found = [REFUSAL[t] for t in entry["traits"] if t in REFUSAL]
    assert len(found) == 1, f"{entry['path']}: say how it must be refused"
    return found[0]


def pil_to_vips(image: Image.Image) -> pyvips.Image:
    image = image.convert("RGB")
    return pyvips.Image.new_from_memory(image.tobytes(), image.width, image.height, 3, "uchar")


def mean_abs_diff(a: pyvips.Image, b: pyvips.Image) -> float:
    return (a.cast("float") - b.cast("float")).abs().avg()


# ---- every file -----------------------------------------------------------------------


@pytest.mark.parametrize("entry", OK, ids=ids(OK))
def test_ok_file_resizes_to_300_wide(entry):
    result = run(read(entry), Resize(width=300), format="source")
    width, height = entry["display_width"], entry["display_height"]
    assert result.format == WEB[entry["mime"]]
    assert sniff(result.data) == result.format
    image = decode(result.data)
    assert (result.width, image.width) == (300, 300)
    assert result.height == image.height == round(height * 300 / width)


@pytest.mark.parametrize("entry", OK, ids=ids(OK))
def test_ok_file_covers_a_200_square_in_webp(entry):
    result = run(read(entry), Resize(width=200, height=200, fit="cover"), format="webp")
    assert sniff(result.data) == "webp"
    image = decode(result.data)
    assert (result.width, result.height, image.width, image.height) == (200, 200, 200, 200)


@pytest.mark.parametrize("entry", REJECT, ids=ids(REJECT))
@pytest.mark.parametrize("plan", ["resize", "cover-webp"])
def test_reject_file_is_refused_with_its_4xx(entry, plan):
    ops = [Resize(width=300)] if plan == "resize" else [Resize(width=200, height=200,
                                                               fit="cover")]
    with pytest.raises(DarkroomError) as raised:
        run(read(entry), *ops, format="webp" if plan == "cover-webp" else "source")
    assert (raised.value.status, raised.value.code) == refusal(entry)


MEMORY_PROBE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from darkroom.config import Limits
    from darkroom.engine import render
    from darkroom.errors import DarkroomError
    from darkroom.plan import EditPlan, Output, Resize
    plans = [EditPlan(ops=(Resize(width=300),)),
             EditPlan(ops=(Resize(width=200, height=200, fit="cover"),),
                      output=Output(format="webp"))]
    statuses = {}
    for path in sys.argv[2:]:
        for i, plan in enumerate(plans):
            try:
                render(plan, (Path(sys.argv[1]) / path).read_bytes(), Limits())
                statuses[f"{path}#{i}"] = 200
            except DarkroomError as error:
                statuses[f"{path}#{i}"] = error.status
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines()
               if line.startswith("VmHWM:"))
    print(json.dumps({"statuses": statuses, "peak_kib": hwm}))
""")


def test_reject_set_runs_in_bounded_memory():
    # A fresh process, so the peak resident size is that of these files alone.
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(CORPUS), *ids(REJECT)],
                          capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(done.stdout)
    assert all(400 <= s < 500 for s in report["statuses"].values()), report["statuses"]
    assert report["peak_kib"] < 300 * 1024, f"peak RSS {report['peak_kib']} KiB"


# ---- hostile files that must render safely -------------------------------------------


def test_polyglot_png_is_re_encoded_without_its_payloads():
    data = read(one("polyglot"))
    assert b"<script" in data and b"PK\x03\x04" in data  # the source does carry them
    result = run(data)
    assert sniff(result.data) == "png"
    assert b"<script" not in result.data.lower()
    assert b"PK\x03\x04" not in result.data


@pytest.mark.parametrize("fmt", ["source", "png", "webp", "jpeg"])
def test_scripted_svg_is_rasterised(fmt):
    data = read(one("svg-script", "ok"))
    result = run(data, format=fmt)
    assert result.format != "svg" and sniff(result.data) in ("png", "webp", "jpeg")
    assert b"<script" not in result.data.lower()
    assert b"<svg" not in result.data.lower()


def test_huge_icc_profile_is_not_carried_over():
    entry = one("large-icc")
    result = run(read(entry), Resize(width=200), format="jpeg")
    assert len(result.data) < 100_000 < entry["bytes"]


# ---- colour and orientation ----------------------------------------------------------


def test_exif_orientation_6_comes_out_upright():
    data = read(one("exif-orientation-6"))
    result = run(data, Resize(width=120))
    assert (result.width, result.height) == (120, 180)  # 1200x1800 shown upright
    reference = pil_to_vips(ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
                            .resize((120, 180)))
    turned_wrong_way = pil_to_vips(Image.open(io.BytesIO(data)).rotate(90, expand=True)
                                   .resize((120, 180)))
    image = decode(result.data)
    assert mean_abs_diff(image, reference) < 8
    assert mean_abs_diff(image, turned_wrong_way) > 30


def test_cmyk_jpeg_is_srgb_and_not_inverted():
    # Pillow decodes this Adobe CMYK JPEG (inverted CMYK, APP14) with a plain formula and
    # no profile; darkroom goes through a CMYK ICC profile, which lands a few levels away.
    # A negative would be ~200 levels off; an oversaturated one would spread the channels
    # far more than Pillow's.
    data = read(one("cmyk"))
    image = decode(run(data).data)
    assert (image.bands, image.interpretation) == (3, "srgb")
    reference = pil_to_vips(Image.open(io.BytesIO(data)))
    assert mean_abs_diff(image, reference) < 12
    assert mean_abs_diff(image, reference.invert()) > 150
    for got, want in zip(mean_colour(image), mean_colour(reference)):
        assert abs(got - want) < 10

    def spread(x: pyvips.Image) -> float:
        r, g, b = (x.cast("int").extract_band(i) for i in range(3))
        return ((r - g).abs() + (g - b).abs() + (b - r).abs()).avg() / 2

    assert spread(image) < 1.5 * spread(reference)


def test_adobe_rgb_is_converted_to_srgb():
    # LittleCMS through Pillow converts the embedded Adobe RGB profile to sRGB; darkroom's
    # output must match that, and not the raw Adobe RGB numbers read as sRGB.
    data = read(one("icc:Adobe RGB (1998)"))
    source = Image.open(io.BytesIO(data))
    profile = ImageCms.ImageCmsProfile(io.BytesIO(source.info["icc_profile"]))
    reference = pil_to_vips(ImageCms.profileToProfile(source, profile,
                                                      ImageCms.createProfile("sRGB")))
    image = decode(run(data, format="png").data)
    assert mean_abs_diff(image, reference) < 1.5
    assert mean_abs_diff(image, pil_to_vips(source)) > 3


def test_greyscale_jpeg_becomes_neutral_srgb():
    image = decode(run(read(one("icc:Gray Gamma 2.2")), format="png").data)
    assert image.bands == 3
    r, g, b = (image.extract_band(i) for i in range(3))
    assert (r - g).abs().max() <= 1 and (g - b).abs().max() <= 1


def test_16_bit_png_keeps_its_colours_in_8_bits():
    image = decode(run(read(one("16-bit", "ok")), Resize(width=90), format="png").data)
    assert image.format == "uchar"
    top, middle, bottom = (image.getpoint(45, y) for y in (5, 30, 55))
    assert top[0] > 150 and top[2] < 80           # red stripe
    assert min(middle) > 230                      # white stripe
    assert bottom[2] > 110 and bottom[0] < 80     # blue stripe


def test_palette_transparency_survives_resizing():
    entry = next(f for f in OK if {"palette", "transparency"} <= set(f["traits"])
                 and f["format"] == "PNG")
    image = decode(run(read(entry), Resize(width=150)).data)
    assert image.hasalpha()
    assert image.extract_band(image.bands - 1).min() == 0


# ---- animations and pages ------------------------------------------------------------

ANIMATED = corpus(expect="ok", trait="animated")


@pytest.mark.parametrize("entry", ANIMATED, ids=ids(ANIMATED))
@pytest.mark.parametrize("ops", [
    [Resize(width=60)], [Resize(width=50, height=50, fit="cover")],
], ids=["resize", "cover"])
def test_animation_stays_animated(entry, ops):
    result = run(read(entry), *ops, format="source")
    assert sniff(result.data) == result.format == WEB[entry["mime"]]
    assert result.frames == entry["frames"]
    assert frame_count(result.data) > 1  # encoders may merge identical frames
    image = decode(result.data, n=-1)
    assert image.get("page-height") == result.height
    assert image.width == result.width


@pytest.mark.parametrize("entry", ANIMATED, ids=ids(ANIMATED))
@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_animation_converts_between_gif_and_webp(entry, fmt):
    result = run(read(entry), Resize(width=40), format=fmt)
    assert sniff(result.data) == fmt
    assert frame_count(result.data) > 1


@pytest.mark.parametrize("entry", ANIMATED, ids=ids(ANIMATED))
def test_animation_to_jpeg_is_one_frame(entry):
    result = run(read(entry), Resize(width=60), format="jpeg")
    assert (sniff(result.data), result.frames) == ("jpeg", 1)
    assert decode(result.data).height == result.height


MULTIPAGE = one("multi-page")
TEXT_BOX = dict(left=400, top=410, width=160, height=70)  # where the pages' labels differ


def page_crop(page: int) -> pyvips.Image:
    image = pyvips.Image.new_from_buffer(read(MULTIPAGE), "", page=page)
    return image.crop(*TEXT_BOX.values()).colourspace("srgb")


@pytest.mark.parametrize("page", [0, 1, 2])
def test_multipage_tiff_renders_the_asked_page(page):
    result = run(read(MULTIPAGE), Extract(**TEXT_BOX), page=page)
    assert (result.page, result.pages) == (page, MULTIPAGE["frames"])
    image = decode(result.data)
    assert (image.cast("int") - page_crop(page).cast("int")).abs().max() == 0
    other = page_crop((page + 1) % 3)
    assert (image.cast("int") - other.cast("int")).abs().max() > 0


def test_multipage_tiff_page_out_of_range():
    with pytest.raises(BadRequest) as raised:
        run(read(MULTIPAGE), Resize(width=100), page=MULTIPAGE["frames"])
    assert (raised.value.status, raised.value.code) == (400, "page_out_of_range")
