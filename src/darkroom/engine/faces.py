"""Frontal faces with OpenCV's Haar cascade (shipped in the wheel: no download, no model
file of our own).

Faces come back as `(left, top, width, height)` boxes in the image's pixels, sorted
deterministically: largest area first, then top to bottom, then left to right. Haar gives
no confidence, so size stands in for prominence (the order Rekognition's `faceIndex`
follows is by confidence).
"""

from __future__ import annotations

import threading
from functools import lru_cache

import cv2
import numpy

from darkroom.engine.context import Image

Box = tuple[int, int, int, int]
DETECT_SIDE = 1024  # larger images are searched on a copy shrunk to this longest side
_LOCAL = threading.local()  # a CascadeClassifier is not safe to share between threads


def detect_faces(image: Image) -> list[Box]:
    """The faces in `image` (any number of bands), largest first."""
    scale = min(1.0, DETECT_SIDE / max(image.width, image.height))
    grey = image.colourspace("b-w")[0] if image.bands > 2 else image[0]
    if scale < 1.0:
        grey = grey.resize(scale)
    grey = grey.cast("uchar")
    pixels = numpy.ndarray(buffer=grey.write_to_memory(), dtype=numpy.uint8,
                           shape=(grey.height, grey.width))
    found = _cascade().detectMultiScale(pixels, scaleFactor=1.1, minNeighbors=5,
                                        minSize=(30, 30))
    boxes = [tuple(round(v / scale) for v in box) for box in found]
    return sorted(boxes, key=lambda b: (-b[2] * b[3], b[1], b[0]))


def _cascade() -> cv2.CascadeClassifier:
    cascade = getattr(_LOCAL, "cascade", None)
    if cascade is None:
        cascade = _LOCAL.cascade = cv2.CascadeClassifier(_cascade_path())
    return cascade


@lru_cache(maxsize=1)
def _cascade_path() -> str:
    return cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
