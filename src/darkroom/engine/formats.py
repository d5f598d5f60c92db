"""Image formats: sniffing from bytes, the allow-list, MIME types, which can animate."""

from __future__ import annotations

from darkroom.errors import Unsupported

MIME = {
    "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "avif": "image/avif",
    "gif": "image/gif", "tiff": "image/tiff", "heic": "image/heic", "svg": "image/svg+xml",
    "bmp": "image/bmp", "ico": "image/x-icon",
}
EXTENSION = {"jpeg": "jpg", "tiff": "tif"}
ANIMATABLE = frozenset({"gif", "webp"})
ALPHA_CAPABLE = frozenset({"png", "webp", "avif", "gif", "tiff"})
# What a source becomes when the client did not name an output format.
WEB_FORMAT = {
    "jpeg": "jpeg", "png": "png", "webp": "webp", "avif": "avif", "gif": "gif",
    "tiff": "png", "heic": "jpeg", "svg": "png", "bmp": "png", "ico": "png",
}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_REFUSED = {
    b"%PDF": "PDF", b"\xff\x0a": "JPEG XL", b"\x00\x00\x00\x0cJXL ": "JPEG XL",
    b"\x00\x00\x00\x0cjP  ": "JPEG 2000", b"\xff\x4f\xff\x51": "JPEG 2000",
}


def sniff(data: bytes) -> str:
    """Name the format from the first bytes; refuse anything not on the allow-list."""
    head = data[:64]
    if not head:
        raise Unsupported("empty body: no image bytes", "empty_source")
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return _ftyp(data[:256])
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] == b"BM" and len(data) > 26:
        return "bmp"
    if head[:4] == b"\x00\x00\x01\x00":
        return "ico"
    if _looks_like_svg(data[:4096]):
        return "svg"
    for magic, name in _REFUSED.items():
        if head.startswith(magic):
            raise Unsupported(f"{name} sources are not supported", "unsupported_format")
    raise Unsupported("the bytes are not a supported image format", "unsupported_format")


def _ftyp(head: bytes) -> str:
    size = int.from_bytes(head[:4], "big")
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, min(size, len(head)), 4)}
    if brands & _AVIF_BRANDS and head[8:12] != b"heic":
        return "avif"
    if brands & _HEIF_BRANDS:
        return "heic"
    raise Unsupported("ISO media file that is neither AVIF nor HEIC", "unsupported_format")


def _looks_like_svg(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not text.startswith((b"<?xml", b"<svg", b"<!--", b"<!doctype svg")):
        return False
    return b"<svg" in text

