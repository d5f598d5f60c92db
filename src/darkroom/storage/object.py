"""Storage on S3 or an S3-compatible service, through obstore's async API (and its
blocking one for worker threads)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import BaseError, PreconditionError
from obstore.store import S3Store

from darkroom.config import S3
from darkroom.errors import DarkroomError, NotFound, StorageError
from darkroom.storage import multipart
from darkroom.storage.base import ObjectInfo, check_key, check_new_key
from darkroom.storage.local import check_prefix

if TYPE_CHECKING:
    from obstore import ObjectMeta
    from obstore.store import ClientConfig, RetryConfig, S3Config

# obstore raises the builtin FileNotFoundError for a missing object (NotFoundError is
# deprecated), its own BaseError subclasses for the rest, and some builtin OSErrors.
_FOREIGN = (BaseError, OSError, ValueError)
PART_BYTES = 8 * 1024 * 1024  # put_file sends bigger files as a multipart upload


class ObjectStorage:
    """Objects in one bucket, under the optional `settings.prefix`."""

    def __init__(
        self,
        settings: S3,
        *,
        client_options: ClientConfig | None = None,
        retry_config: RetryConfig | None = None,
    ) -> None:
        config: S3Config = {"region": settings.region}
        if settings.endpoint:
            config["endpoint"] = settings.endpoint
        if settings.access_key_id:
            config["access_key_id"] = settings.access_key_id
        if settings.secret_access_key:
            config["secret_access_key"] = settings.secret_access_key.get_secret_value()
        options: ClientConfig = {"allow_http": settings.allow_http, **(client_options or {})}
        self.bucket, self._settings = settings.bucket, settings
        try:
            self._store = S3Store(
                settings.bucket,
                prefix=settings.prefix or None,
                config=config,
                client_options=options,
                retry_config=retry_config,
            )
        except _FOREIGN as e:
            raise DarkroomError(f"bad S3 settings: {_first_line(e)}", "bad_config") from e
        self.blocking = ObjectCalls(self._store)

    async def get(self, key: str) -> bytes:
        check_key(key)
        try:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())
        except _FOREIGN as e:
            raise _translate(e, key, "read") from e

    async def head(self, key: str) -> ObjectInfo:
        check_key(key)
        try:
            return _info(await obstore.head_async(self._store, key))
        except _FOREIGN as e:
            raise _translate(e, key, "read") from e

    async def put(self, key: str, data: bytes, content_type: str | None = None,
                  sweep: bool = False) -> ObjectInfo:
        """`sweep` changes nothing: a put is one request (or a multipart upload the store
        never shows), so a crash leaves nothing to clean up here; abandoned parts go with
        `abort_stale_uploads`."""
        check_new_key(key)
        try:
            result = await obstore.put_async(self._store, key, data,
                                             attributes=_attributes(content_type))
        except _FOREIGN as e:  # here "not found" means the bucket is missing
            raise StorageError(f"cannot write {key!r}: {_first_line(e)}") from e
        return _written(key, len(data), result)

    async def put_file(self, key: str, source: Path, content_type: str | None = None,
                       move: bool = False) -> ObjectInfo:
        check_new_key(key)  # `move` changes nothing: the file is sent either way
        try:
            size = os.path.getsize(source)
            result = await obstore.put_async(self._store, key, Path(source),
                                             attributes=_attributes(content_type),
                                             chunk_size=PART_BYTES, max_concurrency=4)
        except _FOREIGN as e:
            raise StorageError(f"cannot write {key!r}: {_first_line(e)}") from e
        return _written(key, size, result)

    async def delete(self, key: str) -> None:
        check_key(key)
        try:
            await obstore.delete_async(self._store, key)
        except FileNotFoundError:
            return
        except _FOREIGN as e:
            raise StorageError(f"cannot delete {key!r}: {_first_line(e)}") from e

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        # obstore matches whole path segments, so list the folder and filter the rest.
        folder = check_prefix(prefix)
        try:
            async for chunk in obstore.list(self._store, folder or None):
                for meta in chunk:
                    if meta["path"].startswith(prefix):
                        yield _info(meta)
        except _FOREIGN as e:
            raise StorageError(f"cannot list {prefix!r}: {_first_line(e)}") from e

    async def sweep(self, folder: str) -> None:
        check_key(folder)  # a put cut short leaves no object, and folders are not objects

    async def abort_stale_uploads(self, before: datetime,
                                  going_on: Callable[[], bool] = lambda: True) -> int:
        return await asyncio.to_thread(multipart.abort_stale, self._settings, before,
                                       going_on)

    async def ping(self) -> None:
        try:
            await anext(aiter(obstore.list(self._store, chunk_size=1)), None)
        except _FOREIGN as e:
            raise StorageError(f"bucket {self.bucket!r} unreachable: {_first_line(e)}") from e


class ObjectCalls:
    """`ObjectStorage.blocking`: the same requests through obstore's blocking API."""

    def __init__(self, store: S3Store) -> None:
        self._store = store

    def get(self, key: str) -> bytes:
        check_key(key)
        try:
            return bytes(obstore.get(self._store, key).bytes())
        except _FOREIGN as e:
            raise _translate(e, key, "read") from e

    def get_if_match(self, key: str, etag: str) -> bytes | None:
        check_key(key)
        try:
            return bytes(obstore.get(self._store, key, options={"if_match": f'"{etag}"'}
                                     ).bytes())
        except (FileNotFoundError, PreconditionError):
            return None
        except _FOREIGN as e:
            raise _translate(e, key, "read") from e

    def put(self, key: str, data: bytes, content_type: str | None = None,
            sweep: bool = False) -> ObjectInfo:
        check_new_key(key)  # `sweep`: as ObjectStorage.put
        try:
            result = obstore.put(self._store, key, data, attributes=_attributes(content_type))
        except _FOREIGN as e:
            raise StorageError(f"cannot write {key!r}: {_first_line(e)}") from e
        return _written(key, len(data), result)

    def put_file(self, key: str, source: Path, content_type: str | None = None,
                 move: bool = False) -> ObjectInfo:
        check_new_key(key)
        try:
            size = os.path.getsize(source)
            result = obstore.put(self._store, key, Path(source),
                                 attributes=_attributes(content_type),
                                 chunk_size=PART_BYTES, max_concurrency=4)
        except _FOREIGN as e:
            raise StorageError(f"cannot write {key!r}: {_first_line(e)}") from e
        return _written(key, size, result)

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            obstore.delete(self._store, key)
        except FileNotFoundError:
            return
        except _FOREIGN as e:
            raise StorageError(f"cannot delete {key!r}: {_first_line(e)}") from e

    def head(self, key: str) -> ObjectInfo:
        check_key(key)
        try:
            return _info(obstore.head(self._store, key))
        except _FOREIGN as e:
            raise _translate(e, key, "check") from e


def _attributes(content_type: str | None) -> dict | None:
    return {"Content-Type": content_type} if content_type else None


def _written(key: str, size: int, result) -> ObjectInfo:
    """What a put answers, from obstore's PutResult."""
    etag = (result["e_tag"] or "").strip('"')
    return ObjectInfo(key=key, size=size, etag=etag, modified=time.time())


def _info(meta: ObjectMeta) -> ObjectInfo:
    etag = (meta["e_tag"] or "").strip('"')
    modified = meta["last_modified"].timestamp()
    return ObjectInfo(key=meta["path"], size=meta["size"], etag=etag, modified=modified)


def _translate(e: Exception, key: str, action: str) -> Exception:
    if isinstance(e, FileNotFoundError):
        return NotFound(f"no object {key!r}", "not_found")
    return StorageError(f"cannot {action} {key!r}: {_first_line(e)}")


def _first_line(e: Exception) -> str:
    """obstore messages carry a multi-line debug dump; keep the summary."""
    return str(e).split("\n", 1)[0]
