"""Upload bodies streamed into a temporary file: hashed and counted on the way, refused
the moment they pass the limit, never held whole in memory.

Two forms: the raw image as the body (`image/*` or `application/octet-stream`), or
`multipart/form-data` with one `file` part and optional `key` and `tags` fields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from darkroom.catalog.repository import parse_tags
from darkroom.catalog.service import Staged
from darkroom.errors import BadRequest, TooLarge
from darkroom.server.staging import StagedFile

FIELDS = frozenset({"file", "key", "tags"})
MAX_FIELD_BYTES = 4096
MAX_PARTS = 8
FORM_OVERHEAD = 64 * 1024  # multipart headers and small fields beyond the file itself


@dataclass
class Upload:
    """A received upload: the staged file and the form's (or query's) key and tags."""

    staged: Staged
    key: str | None = None
    tags: list[str] = field(default_factory=list)


@asynccontextmanager
async def receive_upload(request: Request, directory: Path, max_bytes: int
                         ) -> AsyncIterator[Upload]:
    """Stream the body into `directory`; the temporary file is removed on exit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + FORM_OVERHEAD:
        raise TooLarge(f"upload over {max_bytes} bytes", "source_too_large")
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    sink = StagedFile(directory, max_bytes)
    try:
        if kind == b"multipart/form-data":
            upload = await _multipart(request, sink, options.get(b"boundary", b""))
        elif kind.startswith(b"image/") or kind == b"application/octet-stream":
            async for chunk in request.stream():
                sink.write(chunk)
            upload = Upload(sink.staged(), request.query_params.get("key"),
                            parse_tags(request.query_params.getlist("tags")))
        else:
            raise BadRequest("send the image as the body (image/* or application/"
                             "octet-stream) or as multipart/form-data", "bad_content_type")
        yield upload
    except ClientDisconnect:
        raise BadRequest("the client went away before the body ended", "bad_request") from None
    finally:
        sink.discard()


async def _multipart(request: Request, sink: StagedFile, boundary: bytes) -> Upload:
    form = _Form(sink)
    if not boundary:
        raise BadRequest("multipart body without a boundary", "bad_multipart")
    parser = MultipartParser(boundary, form.callbacks())
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > sink.max_bytes + FORM_OVERHEAD:
                raise TooLarge(f"upload over {sink.max_bytes} bytes", "source_too_large")
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as error:
        raise BadRequest(f"malformed multipart body: {error}", "bad_multipart") from None
    if not form.ended:
        raise BadRequest("multipart body ends before its closing boundary", "bad_multipart")
    if "file" not in form.values:
        raise BadRequest("multipart upload without a `file` part", "missing_file")
    tags = form.values.get("tags", b"").decode("utf-8", "replace")
    key = form.values.get("key", b"").decode("utf-8", "replace") or None
    return Upload(sink.staged(), key, parse_tags([tags] if tags else []))


class _Form:
    """python-multipart callbacks: the `file` part goes to the sink, fields to memory."""

    def __init__(self, sink: StagedFile) -> None:
        self.sink = sink
        self.values: dict[str, bytes] = {}
        self.parts = 0
        self.ended = False
        self._name = ""
        self._header: list[bytes] = [b"", b""]
        self._headers: dict[bytes, bytes] = {}

    def callbacks(self) -> dict:
        return {"on_part_begin": self._begin, "on_header_field": self._field,
                "on_header_value": self._value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_done, "on_part_data": self._data,
                "on_end": self._end}

    def _begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise BadRequest(f"more than {MAX_PARTS} multipart parts", "bad_multipart")
        self._headers = {}

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._header[0] += data[start:end]

    def _value(self, data: bytes, start: int, end: int) -> None:
        self._header[1] += data[start:end]
        if len(self._header[1]) > MAX_FIELD_BYTES:
            raise BadRequest("multipart header too long", "bad_multipart")

    def _header_end(self) -> None:
        self._headers[self._header[0].strip().lower()] = self._header[1].strip()
        self._header = [b"", b""]

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name not in FIELDS:
            raise BadRequest(f"unknown multipart field {name!r}; send file, key, tags",
                             "bad_multipart")
        if name in self.values:
            raise BadRequest(f"multipart field {name!r} sent twice", "bad_multipart")
        self.values[name] = b""
        self._name = name

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._name == "file":
            self.sink.write(data[start:end])
            return
        self.values[self._name] += data[start:end]
        if len(self.values[self._name]) > MAX_FIELD_BYTES:
            raise BadRequest(f"field {self._name!r} over {MAX_FIELD_BYTES} bytes",
                             "bad_multipart")

    def _end(self) -> None:
        self.ended = True

