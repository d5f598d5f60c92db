"""The one place that picks the storage backend from the settings."""

from __future__ import annotations

from darkroom.config import Settings
from darkroom.errors import DarkroomError, StorageError
from darkroom.storage.base import Storage
from darkroom.storage.local import LocalStorage
from darkroom.storage.object import ObjectStorage


def open_storage(settings: Settings) -> Storage:
    """LocalStorage under `settings.storage_dir` (created), or ObjectStorage on `settings.s3`."""
    if settings.storage == "s3":
        if not settings.s3.bucket:
            raise DarkroomError("storage = 's3' needs s3.bucket to be set", code="bad_config")
        return ObjectStorage(settings.s3)
    try:
        settings.storage_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create {settings.storage_dir}: {e.strerror or e}") from e
    return LocalStorage(settings.storage_dir)
