"""Storage backends behind one protocol, picked by `open_storage`."""

from darkroom.storage.base import (
    BlockingStorage, ObjectInfo, Storage, check_key, check_new_key, drop_folder, exists,
)
from darkroom.storage.factory import open_storage
from darkroom.storage.local import LocalStorage
from darkroom.storage.object import ObjectStorage

__all__ = ["BlockingStorage", "LocalStorage", "ObjectInfo", "ObjectStorage", "Storage",
           "check_key", "check_new_key", "drop_folder", "exists",
           "open_storage"]
