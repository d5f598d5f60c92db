"""Headers without decoding, loading with shrink, pages and frames, SVG safety."""

from __future__ import annotations

import re
import socket
import threading

import pytest

from darkroom.engine import probe
from darkroom.engine.load import load
from darkroom.errors import DarkroomError, Unsupported

from .helpers import GREEN, corpus, ids, one, read, run, sniff, solid

DECODABLE = [f for f in corpus() if f["mime"] and "svg-doctype" not in f["traits"]]


@pytest.mark.parametrize("entry", DECODABLE, ids=ids(DECODABLE))
def test_probe_reports_the_declared_header(entry):
    header = probe(read(entry))
    assert (header.width, header.height) == (entry["width"], entry["height"])
    assert header.pages == entry["frames"]
    assert header.bytes == entry["bytes"]


@pytest.mark.parametrize("entry", corpus(trait="bomb"), ids=ids(corpus(trait="bomb")))
def test_probe_reads_a_bomb_header_without_decoding(entry):
    declared = next(t for t in entry["traits"] if t.startswith("declares-"))
    width, height = map(int, re.findall(r"\d+", declared))
    header = probe(read(entry))
    assert (header.width, header.height) == (width, height)


def test_probe_reads_orientation_icc_and_alpha():
    assert probe(read(one("exif-orientation-6"))).orientation == 6
    assert probe(read(one("exif-orientation-6"))).swaps_sides
    assert probe(read(one("icc:Adobe RGB (1998)"))).icc
    assert probe(read(one("semi-transparent"))).alpha
    assert not probe(read(one("cmyk"))).alpha


def test_jpeg_loads_with_a_dct_shrink():
    data = read(one("exif-orientation-6"))  # stored 1800x1200
    header = probe(data)
    image = load(data, header, 0, False, 0.2, True)
    assert (image.width, image.height) == (450, 300)  # shrink 4 keeps >= 0.2 of the pixels


def test_webp_loads_scaled():
    data = read(one("lossy"))  # static webp 480x360
    image = load(data, probe(data), 0, False, 0.5, True)
    assert (image.width, image.height) == (240, 180)


def test_animation_loads_all_frames_stacked():
    entry = one("animated")
    data = read(entry)
    image = load(data, probe(data), 0, True, 1.0, False)
    assert image.get("page-height") == entry["height"]
    assert image.height == entry["height"] * entry["frames"]


def test_one_page_of_a_multipage_tiff():
    entry = one("multi-page")
    data = read(entry)
    image = load(data, probe(data), 2, False, 1.0, False)
    assert (image.width, image.height) == (entry["width"], entry["height"])


PILLOW_ONLY = [f for f in corpus() if f["format"] in ("BMP", "HEIF")]


@pytest.mark.parametrize("entry", PILLOW_ONLY, ids=ids(PILLOW_ONLY))
def test_pillow_only_formats_load_as_srgb(entry):
    data = read(entry)
    image = load(data, probe(data), 0, False, 1.0, False)
    assert image.interpretation == "srgb"
    assert (image.width, image.height) == (entry["width"], entry["height"])


def test_svg_with_entities_is_refused():
    with pytest.raises(Unsupported) as raised:
        probe(read(one("xxe")))
    assert (raised.value.status, raised.value.code) == (415, "unsafe_svg")


def test_svg_entities_hidden_after_a_long_comment_are_refused():
    # The DOCTYPE may sit far from the start: a comment pushes it past any scan window.
    svg = (b'<?xml version="1.0"?><!-- <svg ' + b" " * 70_000 + b"-->"
           b'<!DOCTYPE svg [<!ENTITY w "200">]>'
           b'<svg xmlns="http://www.w3.org/2000/svg" width="&w;" height="50"/>')
    with pytest.raises(Unsupported) as raised:
        probe(svg)
    assert raised.value.code == "unsafe_svg"


def test_svg_with_a_public_doctype_and_no_subset_renders():
    svg = (b'<?xml version="1.0"?><!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
           b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">'
           b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20">'
           b'<rect width="40" height="20" fill="#00ff00"/></svg>')
    result = run(svg)
    assert (result.width, result.height, sniff(result.data)) == (40, 20, "png")


@pytest.fixture
def listener():
    """A loopback TCP server that records every connection made to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    hits: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(0.5)
                try:
                    hits.append(conn.recv(1024))
                except OSError:
                    hits.append(b"")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], hits
    stop.set()
    thread.join(2)
    server.close()


def test_svg_references_are_never_fetched(listener):
    port, hits = listener
    url = f"http://127.0.0.1:{port}/darkroom-canary"
    svg = (f'<?xml version="1.0"?><?xml-stylesheet href="{url}/style.css"?>'
           f'<!DOCTYPE svg SYSTEM "{url}/x.dtd">'
           f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
           f' width="60" height="30"><style>@import url("{url}/import.css");</style>'
           f'<image href="{url}/a.png" width="10" height="10"/>'
           f'<image xlink:href="file:///etc/hostname" width="10" height="10"/>'
           f'<use xlink:href="{url}/b.svg#x"/>'
           f'<rect width="60" height="30" fill="url({url}/c.svg#g)"/></svg>').encode()
    try:
        run(svg)
    except DarkroomError as error:
        assert 400 <= error.status < 500
    assert hits == []


def test_svg_renders_from_bytes_at_its_declared_size():
    result = run(read(one("svg-script")))
    assert (result.width, result.height) == (200, 100)
    assert sniff(result.data) == "png"


def test_synthetic_png_round_trip():
    result = run(solid(30, 20, GREEN).pngsave_buffer())
    assert (result.format, result.width, result.height, result.pages) == ("png", 30, 20, 1)
