"""The render's tap: the decoded source shown once, the rendition unchanged by it."""

from __future__ import annotations

from urllib.parse import parse_qsl

from darkroom.config import Limits
from darkroom.engine import probe, render
from darkroom.grammars import native

from engine.helpers import one, read

LIMITS = Limits()


def _plan(query: str):
    return native.parse("x", parse_qsl(query))


def test_the_tap_sees_the_upright_srgb_source_as_loaded_and_changes_nothing():
    entry = one("exif-orientation-6")  # a JPEG turned a quarter by its EXIF
    data, plan = read(entry), _plan("w=100&fm=png")
    seen = []
    tapped = render(plan, data, LIMITS, tap=seen.append)
    (image,) = seen
    assert image.interpretation == "srgb" and image.format == "uchar"
    # shrunk on load (JPEG 1/8, still more than 100 wide) and stood upright
    assert 100 <= image.width < entry["display_width"] // 4
    assert abs(image.width / image.height - entry["display_width"] / entry["display_height"]) < 0.05
    assert tapped == render(plan, data, LIMITS)


def test_an_animation_is_not_tapped():
    seen = []
    render(_plan("w=50&fm=gif"), read(one("animated", "ok")), LIMITS, tap=seen.append)
    assert seen == []


def test_a_header_given_spares_the_probe_and_changes_nothing():
    data, plan = read(one("exif-orientation-6")), _plan("w=100&fm=webp")
    alone = render(plan, data, LIMITS)
    assert render(plan, data, LIMITS, header=probe(data)) == alone
    # a header of other bytes is not trusted: the source is probed after all
    other = probe(read(one("alpha")))
    assert render(plan, data, LIMITS, header=other) == alone
