"""Helpers for engine tests: the shared corpus, synthetic images, sniffing, pixel checks.

Sniffing here is independent of `darkroom.engine.formats` on purpose: tests must not trust
the code they check to say what it produced.
"""

from __future__ import annotations

from functools import cache

import pyvips

from darkroom.config import Limits
from darkroom.engine import Rendered, render
from darkroom.plan import EditPlan, Output

from corpus_files import CORPUS, MANIFEST

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (128, 128, 128)
LOSSLESS = 2  # tolerance for PNG/lossless outputs (rounding only)
LOSSY = 24  # tolerance for JPEG/lossy WebP outputs near flat regions


@cache
def manifest() -> tuple[dict, ...]:
    """Every corpus entry (a missing corpus fails the run loudly, in corpus_files)."""
    return tuple(MANIFEST)


def corpus(expect: str | None = None, trait: str | None = None) -> list[dict]:
    """Corpus entries filtered by `expect` and/or a trait."""
    return [f for f in manifest()
            if (expect is None or f["expect"] == expect)
            and (trait is None or trait in f["traits"])]


def one(trait: str, expect: str | None = None) -> dict:
    """The first corpus entry with `trait` (the corpus has at least one)."""
    found = corpus(expect, trait)
    assert found, f"corpus has no file with trait {trait!r}"
    return found[0]


def read(entry: dict) -> bytes:
    return (CORPUS / entry["path"]).read_bytes()


def ids(entries: list[dict]) -> list[str]:
    return [e["path"] for e in entries]


def solid(width: int, height: int, colour: tuple[int, ...]) -> pyvips.Image:
    """A width x height image of one colour (3 bands sRGB, or 4 with alpha)."""
    image = pyvips.Image.black(width, height, bands=len(colour)) + list(colour)
    return image.cast("uchar").copy(interpretation="srgb")


def halves(width: int = 200, height: int = 100, left=RED, right=BLUE) -> pyvips.Image:
    """Left half one colour, right half another."""
    return solid(width // 2, height, left).join(solid(width - width // 2, height, right),
                                                 "horizontal")


def stacked(width: int = 100, height: int = 200, top=GREEN, bottom=RED) -> pyvips.Image:
    """Top half one colour, bottom half another."""
    return solid(width, height // 2, top).join(solid(width, height - height // 2, bottom),
                                                "vertical")


def with_square(base: pyvips.Image, colour, left: int, top: int, size: int) -> pyvips.Image:
    """`base` with a `size` square of `colour` at left, top."""
    return base.insert(solid(size, size, colour), left, top)


def png(image: pyvips.Image) -> bytes:
    return image.pngsave_buffer(compression=1)


def sniff(data: bytes) -> str:
    """The container of encoded bytes, from magic numbers only."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "avif"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return "unknown"


def decode(data: bytes, **options) -> pyvips.Image:
    """Decode output bytes with libvips (first frame unless `n=-1`)."""
    return pyvips.Image.new_from_buffer(data, "", **options)


def frame_count(data: bytes) -> int:
    """Frames in an encoded GIF/WebP (1 for anything else)."""
    image = decode(data, n=-1)
    return image.get("n-pages") if "n-pages" in image.get_fields() else 1


def pixel(image: pyvips.Image, x: int, y: int) -> list[float]:
    return list(image.getpoint(x, y))


def assert_colour(actual, expected, tolerance: float, where: str = "") -> None:
    """Each band within `tolerance` of `expected` (compares as many bands as given)."""
    got = list(actual)[: len(expected)]
    assert all(abs(a - e) <= tolerance for a, e in zip(got, expected)), (
        f"{where}: got {got}, expected {list(expected)} +/- {tolerance}")


def mean_colour(image: pyvips.Image) -> list[float]:
    return [image.extract_band(i).avg() for i in range(3)]


def run(data: bytes, *ops, limits: Limits | None = None, assets=None, page: int = 0,
        **output) -> Rendered:
    """Render `ops` on `data` (PNG out unless `format=` says otherwise)."""
    output.setdefault("format", "png")
    plan = EditPlan.model_validate(
        {"source": {"page": page}, "ops": list(ops), "output": Output(**output)})
    return render(plan, data, limits or Limits(), assets=assets)


def run_image(image: pyvips.Image, *ops, **kwargs) -> tuple[Rendered, pyvips.Image]:
    """Render a synthetic image; returns the result and its decoded first frame."""
    result = run(png(image), *ops, **kwargs)
    return result, decode(result.data)
