"""The OpenAPI description of `GET /img/{key}`, one entry per native parameter."""

from __future__ import annotations

DESCRIPTIONS = {
    "w": "Width in pixels (before `dpr`).",
    "h": "Height in pixels (before `dpr`).",
    "fit": "cover | contain | fill | inside (default) | outside, as in sharp.",
    "crop": "Gravity for cover/contain: center, top, bottom, left, right, top,left, ..., "
            "north..southwest, attention, entropy, focalpoint.",
    "fp-x": "Focal point x (0-1) with crop=focalpoint.",
    "fp-y": "Focal point y (0-1) with crop=focalpoint.",
    "dpr": "Device pixel ratio (0-5]: multiplies w, h, pad, radius and mark-pad.",
    "upscale": "false: never enlarge the source (default true).",
    "rect": "Manual crop x,y,width,height before resizing.",
    "rot": "Rotate clockwise by degrees (-360..360); corners take bg.",
    "flip": "h, v or hv.",
    "trim": "Trim a uniform border: auto or a colour distance 0-255.",
    "blur": "Gaussian blur sigma (0-100].",
    "sharp": "Sharpen sigma (0-10].",
    "bri": "Brightness -100..100.",
    "con": "Contrast -100..100.",
    "sat": "Saturation -100..100.",
    "gray": "true: shades of grey.",
    "bg": "Background colour (hex RGB[A] or a name) for contain, rot, pad and flattening.",
    "pad": "Padding in pixels: n, or top,right,bottom,left.",
    "radius": "Rounded-corner radius in pixels.",
    "mark": "Storage key of a watermark image.",
    "mark-pos": "Watermark position: center, top, bottom,right, ... (default bottom,right).",
    "mark-alpha": "Watermark opacity 0-100.",
    "mark-w": "Watermark width as a fraction (0-1] of the image width.",
    "mark-pad": "Watermark margin in pixels.",
    "fm": "jpeg | png | webp | avif | gif | tiff | auto (AVIF/WebP by Accept, Vary: Accept).",
    "q": "Quality 1-100 (defaults: JPEG/WebP 80, AVIF 50).",
    "lossless": "true: lossless WebP/AVIF.",
    "strip": "false: keep EXIF/XMP/ICC metadata (default strips it).",
    "page": "Page (TIFF) to render, counting from 1.",
    "dl": "Download: Content-Disposition attachment with this file name.",
    "s": "Signature: base64url HMAC-SHA256 of the path and sorted query (see darkroom sign).",
    "exp": "Expiry of a signed URL, unix seconds (covered by the signature).",
}

IMAGE_PATH = {
    "get": {
        "tags": ["images"],
        "summary": "Render a stored image by URL (native grammar)",
        "description": "Unknown or repeated parameters are a 400. HEAD is answered too. "
                       "Results are cached; ETag and If-None-Match give 304.",
        "parameters": [
            {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}},
            *({"name": name, "in": "query", "required": False, "description": text,
               "schema": {"type": "string"}} for name, text in DESCRIPTIONS.items()),
        ],
        "responses": {
            "200": {"description": "The image", "content": {"image/*": {}}},
            "304": {"description": "Not modified (If-None-Match)"},
            "400": {"description": "Bad parameter, key or plan"},
            "401": {"description": "Signature required"},
            "403": {"description": "Bad or expired signature"},
            "404": {"description": "Source not found"},
            "413": {"description": "Source or result over a limit"},
            "415": {"description": "Not a supported image"},
            "422": {"description": "Corrupt image or time budget exceeded"},
            "503": {"description": "Overloaded; see Retry-After"},
        },
    }
}
