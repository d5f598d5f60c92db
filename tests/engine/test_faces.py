"""Haar face detection and the face_crop step on the corpus faces."""

from __future__ import annotations

import pytest
import pyvips

from darkroom.config import Limits
from darkroom.engine import render
from darkroom.engine.faces import detect_faces
from darkroom.errors import BadRequest
from darkroom.plan import EditPlan, FaceCrop, Output, Source

from corpus_files import CORPUS

# Boxes checked by eye (DEPENDENCIES.md section 6), with a few pixels of tolerance.
FACES = {"photos/face_katherine-maher.jpg": (259, 146, 239, 239),
         "png/face_astronaut.png": (177, 67, 93, 93)}


@pytest.mark.parametrize(("path", "box"), FACES.items())
def test_detects_the_known_face(path, box):
    found = detect_faces(pyvips.Image.new_from_file(str(CORPUS / path)))
    assert len(found) == 1
    assert all(abs(a - b) <= 6 for a, b in zip(found[0], box)), found


def test_no_face_and_big_images_shrunk_first():
    assert detect_faces(pyvips.Image.new_from_file(
        str(CORPUS / "photos/progressive_puppies.jpg"))) == []
    big = pyvips.Image.new_from_file(str(CORPUS / "png/face_astronaut.png")).resize(3)
    x, y, w, h = detect_faces(big)[0]  # largest first
    assert abs(x - 3 * 177) <= 20 and abs(w - 3 * 93) <= 25


def _render(path: str, op: FaceCrop) -> tuple[int, int]:
    plan = EditPlan(source=Source(key=path), ops=(op,), output=Output(format="png"))
    done = render(plan, (CORPUS / path).read_bytes(), Limits())
    return done.width, done.height


def test_face_crop_with_padding_is_clipped_to_the_image():
    width, height = _render("png/face_astronaut.png", FaceCrop(padding=20))
    assert abs(width - 136) <= 8 and abs(height - 136) <= 8
    assert _render("png/face_astronaut.png", FaceCrop(padding=5000)) == (512, 512)
    assert _render("photos/progressive_puppies.jpg", FaceCrop()) == (256, 160)


def test_face_index_out_of_range():
    with pytest.raises(BadRequest) as caught:
        _render("png/face_astronaut.png", FaceCrop(index=1))
    assert caught.value.code == "face_index_out_of_range"
