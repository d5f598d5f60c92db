"""A BlurHash encoder (https://blurha.sh): a short string that draws a blurred placeholder."""

from __future__ import annotations

import numpy as np

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"


def encode(pixels: np.ndarray, x_components: int = 4, y_components: int = 3) -> str:
    """The BlurHash of an RGB uint8 array shaped (height, width, 3)."""
    if not (1 <= x_components <= 9 and 1 <= y_components <= 9):
        raise ValueError("components must be 1-9")
    height, width = pixels.shape[:2]
    linear = _to_linear(pixels[..., :3].astype(np.float64) / 255.0)
    xs = np.arange(width) * np.pi / width
    ys = np.arange(height) * np.pi / height
    factors = []
    for j in range(y_components):
        for i in range(x_components):
            basis = np.outer(np.cos(ys * j), np.cos(xs * i))
            scale = 1.0 if i == j == 0 else 2.0
            factors.append(scale * (linear * basis[..., None]).sum(axis=(0, 1)) / (width * height))
    dc, ac = factors[0], factors[1:]
    text = _base83((x_components - 1) + (y_components - 1) * 9, 1)
    if ac:
        largest = max(float(np.abs(f).max()) for f in ac)
        quantised = int(max(0, min(82, np.floor(largest * 166 - 0.5))))
        maximum = (quantised + 1) / 166
    else:
        quantised, maximum = 0, 1.0
    text += _base83(quantised, 1)
    r, g, b = (_to_srgb(float(c)) for c in dc)
    text += _base83((r << 16) + (g << 8) + b, 4)
    for factor in ac:
        r, g, b = (_quantise_ac(float(c) / maximum) for c in factor)
        text += _base83(r * 19 * 19 + g * 19 + b, 2)
    return text


def _to_linear(values: np.ndarray) -> np.ndarray:
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def _to_srgb(value: float) -> int:
    value = min(1.0, max(0.0, value))
    if value <= 0.0031308:
        return int(value * 12.92 * 255 + 0.5)
    return int((1.055 * value ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _quantise_ac(value: float) -> int:
    signed = np.copysign(abs(value) ** 0.5, value)
    return int(max(0, min(18, np.floor(signed * 9 + 9.5))))


def _base83(value: int, length: int) -> str:
    return "".join(_ALPHABET[(value // 83 ** (length - i)) % 83] for i in range(1, length + 1))
