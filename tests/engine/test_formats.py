"""Format sniffing from bytes (never names), the allow-list, and the choice of output format."""

from __future__ import annotations

import pytest

from darkroom.engine import choose_format
from darkroom.engine.formats import ALPHA_CAPABLE, ANIMATABLE, MIME, WEB_FORMAT, sniff
from darkroom.engine.load import Header
from darkroom.errors import Unsupported
from darkroom.plan.model import OutputFormat

from .helpers import corpus, ids, read

SNIFFED = {"image/jpeg": "jpeg", "image/png": "png", "image/gif": "gif", "image/webp": "webp",
           "image/avif": "avif", "image/heic": "heic", "image/tiff": "tiff", "image/bmp": "bmp",
           "image/svg+xml": "svg"}
TYPED = [f for f in corpus() if f["mime"]]


@pytest.mark.parametrize("entry", TYPED, ids=ids(TYPED))
def test_sniff_names_every_corpus_format(entry):
    assert sniff(read(entry)) == SNIFFED[entry["mime"]]


def test_sniff_ignores_the_file_name():
    entry = corpus(trait="extension-mismatch")[0]
    with pytest.raises(Unsupported) as raised:
        sniff(read(entry))
    assert (raised.value.status, raised.value.code) == (415, "unsupported_format")


def test_empty_body_is_its_own_error():
    with pytest.raises(Unsupported) as raised:
        sniff(b"")
    assert (raised.value.status, raised.value.code) == (415, "empty_source")


@pytest.mark.parametrize("head", [
    b"%PDF-1.7\n", b"\xff\x0a\x00\x00", b"\x00\x00\x00\x0cJXL \r\n\x87\n",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51\x00",
    b"<html><body>hi</body></html>", b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00isommp41",
])
def test_refused_formats_are_415(head):
    with pytest.raises(Unsupported) as raised:
        sniff(head + b"\x00" * 64)
    assert raised.value.status == 415
    assert raised.value.code == "unsupported_format"


@pytest.mark.parametrize(("ftyp", "fmt"), [
    (b"avif", "avif"), (b"avis", "avif"), (b"heic", "heic"), (b"mif1", "heic"),
])
def test_iso_media_brands(ftyp, fmt):
    box = b"\x00\x00\x00\x18ftyp" + ftyp + b"\x00\x00\x00\x00" + ftyp + b"mif1"
    assert sniff(box + b"\x00" * 64) == fmt


@pytest.mark.parametrize("text", [
    b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    b"\xef\xbb\xbf  \n<?xml version='1.0'?><svg/>",
    b"<!-- drawn by hand --><svg/>",
    b"<!DOCTYPE svg PUBLIC '-//W3C//DTD SVG 1.1//EN' 'x.dtd'><svg/>",
])
def test_svg_is_recognised_by_content(text):
    assert sniff(text) == "svg"


def test_xml_that_is_not_svg_is_refused():
    with pytest.raises(Unsupported):
        sniff(b"<?xml version='1.0'?><html/>")


def test_every_output_format_has_a_mime_type():
    for fmt in OutputFormat.__args__:
        assert MIME[fmt].startswith("image/")
    assert ANIMATABLE <= set(OutputFormat.__args__)
    assert "jpeg" not in ALPHA_CAPABLE


def header(fmt: str, pages: int = 1, alpha: bool = False) -> Header:
    return Header(fmt, 100, 100, pages, alpha, 1, False, 1000)


@pytest.mark.parametrize("source", sorted(WEB_FORMAT))
def test_source_becomes_a_web_format(source):
    assert choose_format("source", header(source), frozenset()) in OutputFormat.__args__


@pytest.mark.parametrize(("source", "accept", "fmt"), [
    (header("jpeg"), {"avif", "webp"}, "avif"),
    (header("jpeg"), {"webp"}, "webp"),
    (header("jpeg"), set(), "jpeg"),
    (header("png", alpha=True), set(), "png"),
    (header("gif", pages=10), {"avif", "webp"}, "webp"),   # animated: AVIF would lose frames
    (header("gif", pages=10), {"avif"}, "gif"),
    (header("tiff", pages=3), {"avif"}, "avif"),           # pages are not an animation
])
def test_auto_picks_from_accept(source, accept, fmt):
    assert choose_format("auto", source, frozenset(accept)) == fmt


def test_an_explicit_format_wins():
    assert choose_format("tiff", header("gif", pages=4), frozenset({"webp"})) == "tiff"
