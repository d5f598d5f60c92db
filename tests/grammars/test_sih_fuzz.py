"""Hypothesis: no SIH request, however malformed, makes the parser fail other than with
darkroom's own 4xx (or the documented 501 of contentModeration)."""

from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings, strategies as st

from darkroom.errors import DarkroomError, NotImplementedYet
from darkroom.grammars import sih
from darkroom.grammars.sih_edits import FILTER_ORDER, FORMAT_KEYS, UNSUPPORTED
from darkroom.grammars.sih_geometry import STEPS
from darkroom.grammars.sih_query import KEPT, kept_params

BUCKETS = ["darkroom", "b"]
EDIT_NAMES = sorted({*STEPS, *FILTER_ORDER, *FORMAT_KEYS, *UNSUPPORTED, "overlayWith",
                     "contentModeration", "animated", "toFormat", "unknown"})
OPTION_NAMES = ["width", "height", "fit", "position", "background", "withoutEnlargement",
                "ratio", "left", "top", "rx", "ry", "sigma", "lower", "upper", "alpha",
                "faceIndex", "padding", "bucket", "key", "wRatio", "hRatio", "options",
                "quality", "lossless", "kernel", "r", "g", "b", "threshold", "minConfidence"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
                    st.sampled_from(["cover", "inside", "#fff", "red", "50p", "-10",
                                     "darkroom", "a.png", "webp", "jpg", "top", "1e400"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(OPTION_NAMES), inner,
                                                max_size=5)), max_leaves=12)
EDITS = st.dictionaries(st.sampled_from(EDIT_NAMES), VALUES, max_size=6)
QUERY = st.lists(st.tuples(st.sampled_from([*KEPT, "x"]), st.text(
    st.characters(codec="ascii", exclude_characters="&=#"), max_size=8)), max_size=6)


def _check(path: str, query: list[tuple[str, str]]) -> None:
    try:
        request = sih.parse(path, kept_params("&".join(f"{k}={v}" for k, v in query)),
                            BUCKETS)
        sih.to_plan(request, "k.jpg", lambda bucket, key: key, None)
    except NotImplementedYet as error:
        assert error.code == "content_moderation_unavailable"
    except DarkroomError as error:
        assert 400 <= error.status < 500, error


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=EDITS, extra=st.dictionaries(st.sampled_from(
    ["bucket", "key", "outputFormat", "headers", "effort", "other"]), VALUES, max_size=4),
    query=QUERY)
def test_json_requests(edits, extra, query):
    body = {"key": "a.jpg", "edits": edits, **extra}
    path = "/" + base64.b64encode(json.dumps(body).encode()).decode()
    _check(path, query)


FILTER = st.builds(lambda n, a: f"{n}({a})", st.sampled_from([
    "blur", "rotate", "fill", "format", "quality", "rgb", "sharpen", "watermark", "smart_crop",
    "proportion", "convolution", "background_color", "stretch", "upscale", "no_upscale",
    "animated", "strip_exif", "equalize", "nope"]), st.text(
        st.characters(codec="ascii", exclude_characters="()"), max_size=20))
SEGMENT = st.one_of(st.sampled_from(["fit-in", "100x0", "0x0", "10x10:5x5", "s3:b", "300x200",
                                     "unsafe", "a.jpg", ""]),
                    st.lists(FILTER, min_size=1, max_size=3).map(
                        lambda fs: "filters:" + ":".join(fs)),
                    st.text(max_size=10))


@settings(max_examples=400, deadline=None)
@given(segments=st.lists(SEGMENT, min_size=1, max_size=6), query=QUERY)
def test_thumbor_paths(segments, query):
    _check("/" + "/".join(segments), query)


@settings(max_examples=300, deadline=None)
@given(path=st.text(max_size=80), query=QUERY)
def test_any_path(path, query):
    _check("/" + path, query)
