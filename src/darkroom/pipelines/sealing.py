"""The secrets of stored pipeline definitions, sealed at rest.

A step's secret parameters (`signing_keys`, `password`, `secret`, `token`) and a webhook's
`url` (its path is often its key) are stored sealed wherever a definition is written: the
pipeline's row, each job's copy, the workflow's inputs. So a copy or a backup of the
database shows none of them. Sealing is AES-SIV (deterministic: the same secret seals the
same way, so a stored definition reads the same each time and is parsed once), with the
first of `secret_keys`; any of them unseals, for rotation. Without `secret_keys`, a
SQLite catalog (one host) uses a key file made once in the data dir (`secret.key`, 0600);
a PostgreSQL catalog (many hosts, which must share a key) stores them plain, with a
warning at start, until `secret_keys` is set. A value stored plain (before sealing, or
without a key) is read as it is.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from sqlalchemy.engine import make_url

log = structlog.get_logger("darkroom.pipelines")
SECRET_PARAMS = frozenset({"signing_keys", "password", "secret", "token"})
SEALED_PARAMS = SECRET_PARAMS | {"url"}
MASK = "**********"  # what answers show of a secret
PREFIX = "sealed:"
KEY_BYTES = 64  # AES-256-SIV
_CONTEXT = [b"darkroom pipeline secret"]
_keys: list[tuple[str, AESSIV]] = []  # (id, cipher); the first seals


def new_key() -> str:
    """A fresh key, as `secret_keys` takes it (URL-safe base64 of 64 random bytes)."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


def use(keys: list[str]) -> None:
    """Seal with the first of `keys` from now on, unseal with any; none: store plain."""
    ring = []
    for key in keys:
        raw = base64.urlsafe_b64decode(key.encode())
        if len(raw) != KEY_BYTES:
            raise ValueError(f"a secret key is {KEY_BYTES} bytes in URL-safe base64 "
                             f"(`darkroom secret-key` makes one), not {len(raw)}")
        ring.append((hashlib.sha256(raw).hexdigest()[:8], AESSIV(raw)))
    _keys[:] = ring


def configure(settings) -> None:
    """Seal with `settings.secret_keys`; without them, on SQLite, with the data dir's key
    file; on PostgreSQL, not at all (a warning says so)."""
    keys = [key.get_secret_value() for key in settings.secret_keys]
    if not keys and make_url(settings.database_url).get_backend_name() == "sqlite":
        keys = [key_file(settings.data_dir)]
    elif not keys:
        log.warning("pipeline_secrets_stored_plain", reason="no secret_keys set; every "
                    "host of a PostgreSQL catalog must share them")
    use(keys)


def key_file(folder: Path) -> str:
    """The key kept in `folder/secret.key`, made (readable by its owner only) if absent."""
    path = folder / "secret.key"
    if path.exists():
        return path.read_text().strip()
    folder.mkdir(parents=True, exist_ok=True)
    fresh = folder / f"secret.key.{os.getpid()}.{os.urandom(4).hex()}"
    try:  # written whole, then linked into place: a process starting beside sees it whole
        with os.fdopen(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                       "w") as file:
            file.write(new_key() + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(fresh, path)
        except FileExistsError:  # another process made it first: theirs is the key
            pass
    finally:
        fresh.unlink(missing_ok=True)
    return path.read_text().strip()


def seal_params(params: dict) -> dict:
    """`params` with its secret values (and `url`s), at any depth, sealed; as they are
    without a key."""
    return _walk(params, _seal) if _keys else params


def unseal_params(params: object) -> object:
    """`params` with every sealed value opened (ValueError if no key opens one)."""
    return _walk(params, _unseal)


def masked_url(url: str) -> str:
    """The scheme and host of `url`, the rest masked: credentials, a token in the query,
    or a chat service's webhook path, which is its key."""
    parts = urlsplit(url)
    if not (parts.path.strip("/") or parts.query or parts.fragment or "@" in parts.netloc):
        return url
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/{MASK}"


def _walk(value: object, change: Callable[[str], str], field: str = "") -> object:
    if isinstance(value, dict):
        return {k: _walk(v, change, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, change, field) for v in value]
    return change(value) if field in SEALED_PARAMS and isinstance(value, str) else value


def _seal(text: str) -> str:
    if text.startswith(PREFIX):
        return text
    key_id, cipher = _keys[0]
    sealed = cipher.encrypt(text.encode(), _CONTEXT)
    return f"{PREFIX}{key_id}:{base64.urlsafe_b64encode(sealed).decode()}"


def _unseal(text: str) -> str:
    if not text.startswith(PREFIX):
        return text
    key_id, _, body = text[len(PREFIX):].partition(":")
    for known, cipher in _keys:
        if known == key_id:
            try:
                return cipher.decrypt(base64.urlsafe_b64decode(body.encode()),
                                      _CONTEXT).decode()
            except (InvalidTag, ValueError):
                break
    raise ValueError(f"a secret sealed with key {key_id} that no key of `secret_keys` "
                     "opens")
