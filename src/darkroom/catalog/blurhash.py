"""A BlurHash encoder (https://blurha.sh): a short string that draws a blurred placeholder."""

from __future__ import annotations

import math

import numpy as np

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"


def encode(pixels: np.ndarray, x_components: int = 4, y_components: int = 3) -> str:
    """The BlurHash of an RGB uint8 array shaped (height, width, 3)."""
    if not (1 <= x_components <= 9 and 1 <= y_components <= 9):
        raise ValueError("components must be 1-9")
    found = factors(pixels, x_components, y_components).tolist()  # plain floats from here
    dc, ac = found[0], found[1:]
    text = _base83((x_components - 1) + (y_components - 1) * 9, 1)
    if ac:
        largest = max(abs(c) for factor in ac for c in factor)
        quantised = int(max(0, min(82, math.floor(largest * 166 - 0.5))))
        maximum = (quantised + 1) / 166
    else:
        quantised, maximum = 0, 1.0
    text += _base83(quantised, 1)
    r, g, b = (_to_srgb(c) for c in dc)
    text += _base83((r << 16) + (g << 8) + b, 4)
    for factor in ac:
        r, g, b = (_quantise_ac(c / maximum) for c in factor)
        text += _base83(r * 19 * 19 + g * 19 + b, 2)
    return text


def factors(pixels: np.ndarray, x_components: int, y_components: int) -> np.ndarray:
    """The (y * x, 3) component factors: each the mean of the linear pixels weighted by
    cos(pi*j*y/h) * cos(pi*i*x/w), doubled but for the DC term. Rows and columns are
    weighted in two matrix products, not in one pass over the image per factor."""
    height, width = pixels.shape[:2]
    linear = _LINEAR[pixels[..., :3]]
    rows = np.cos(np.outer(np.arange(y_components), np.arange(height)) * np.pi / height)
    cols = np.cos(np.outer(np.arange(x_components), np.arange(width)) * np.pi / width)
    sums = np.tensordot(np.tensordot(rows, linear, axes=(1, 0)), cols, axes=(1, 1))
    sums = sums.transpose(0, 2, 1)  # (j, c, i) -> (j, i, c)
    scale = np.full((y_components, x_components, 1), 2.0)
    scale[0, 0] = 1.0
    return (scale * sums / (width * height)).reshape(-1, 3)


def _to_linear(values: np.ndarray) -> np.ndarray:
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


_LINEAR = _to_linear(np.arange(256) / 255.0)  # every 8-bit level, computed once


def _to_srgb(value: float) -> int:
    value = min(1.0, max(0.0, value))
    if value <= 0.0031308:
        return int(value * 12.92 * 255 + 0.5)
    return int((1.055 * value ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _quantise_ac(value: float) -> int:
    signed = math.copysign(abs(value) ** 0.5, value)
    return int(max(0, min(18, math.floor(signed * 9 + 9.5))))


def _base83(value: int, length: int) -> str:
    return "".join(_ALPHABET[(value // 83 ** (length - i)) % 83] for i in range(1, length + 1))
