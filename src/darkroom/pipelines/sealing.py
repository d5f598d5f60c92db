"""The secrets of stored pipeline definitions, sealed at rest.

A step's secret parameters (`signing_keys`, `password`, `secret`, `token`, at any depth,
whatever their value) and every `url` (a webhook's path is often its key) are sealed
wherever a definition is written: the pipeline's row, each job's copy, the run's inputs.
So a copy of the database written since shows none of them. Sealing is AES-SIV, bound to
the field's name (a sealed value moved to another field does not open) and deterministic
(the same secret seals the same way, so a stored definition reads the same each time and
is parsed once), with the first of `secret_keys`; any of them opens, for rotation: keep
an old key while jobs sealed with it may still run or be retried. Without `secret_keys`,
a SQLite catalog (one host) uses a key file made once beside its database (`secret.key`,
0600); a PostgreSQL catalog (many hosts, which must share a key) stores them plain, with
a warning at start, until `secret_keys` is set. A value stored plain (before sealing, or
without a key) is read as it is; definitions from clients may hold no sealed value.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
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
    """Seal with the first of `keys` from now on, open with any; none: store plain."""
    _keys[:] = [(hashlib.sha256(raw).hexdigest()[:8], AESSIV(raw)) for raw in map(
        decode_key, keys)]


def decode_key(key: str) -> bytes:
    """The bytes of a key of `secret_keys`; ValueError if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(key.encode())
    except ValueError:
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ValueError(f"a secret key is {KEY_BYTES} bytes in URL-safe base64 "
                         "(`darkroom secret-key` makes one)")
    return raw


def configure(settings) -> None:
    """Seal with `settings.secret_keys`; without them, on SQLite, with the key file beside
    the database; on PostgreSQL, not at all (a warning says so). ValueError if the key
    file cannot be read or made."""
    keys = [key.get_secret_value() for key in settings.secret_keys]
    url = make_url(settings.database_url)
    if not keys and url.get_backend_name() == "sqlite":
        folder = Path(url.database).parent if url.database not in (None, "", ":memory:") \
            else settings.data_dir
        try:
            keys = [key_file(folder)]
        except OSError as error:
            raise ValueError(f"cannot read or make the secret key file in {folder}: "
                             f"{error.strerror or error}") from None
    elif not keys:
        log.warning("pipeline_secrets_stored_plain", reason="no secret_keys set; every "
                    "host of a PostgreSQL catalog must share them")
    use(keys)


def key_file(folder: Path) -> str:
    """The key kept in `folder/secret.key`, made (readable by its owner only) if absent:
    written whole, then linked into place, so a process starting beside never reads half
    of it; on a filesystem without hard links, created in place."""
    path = folder / "secret.key"
    if path.exists():
        return path.read_text().strip()
    folder.mkdir(parents=True, exist_ok=True)
    fresh = folder / f"secret.key.{os.getpid()}.{os.urandom(4).hex()}"
    try:
        _write_key(fresh)
        try:
            os.link(fresh, path)
        except FileExistsError:  # another process made it first: theirs is the key
            pass
        except OSError:  # no hard links here
            with contextlib.suppress(FileExistsError):
                _write_key(path)
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)  # the key outlives a power loss, as what it sealed does
        finally:
            os.close(descriptor)
    finally:
        fresh.unlink(missing_ok=True)
    return path.read_text().strip()


def _write_key(path: Path) -> None:
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        file.write(new_key() + "\n")
        file.flush()
        os.fsync(file.fileno())


def seal_params(params: dict) -> dict:
    """`params` with its secret values (and `url`s), at any depth, sealed; as they are
    without a key."""
    return _walk(params, _seal) if _keys else params


def unseal_params(params: object) -> object:
    """`params` with every sealed value opened (ValueError if no key opens one)."""
    return _walk(params, _unseal)


def sealed_within(params: object) -> bool:
    """Whether `params` holds a sealed value anywhere (a client's definition may not)."""
    if isinstance(params, dict):
        return any(sealed_within(v) for v in params.values())
    if isinstance(params, list):
        return any(sealed_within(v) for v in params)
    return isinstance(params, str) and params.startswith(PREFIX)


def masked_url(url: str) -> str:
    """The scheme and host of `url`, the rest masked: credentials, a token in the query,
    or a chat service's webhook path, which is its key."""
    parts = urlsplit(url)
    if not (parts.path.strip("/") or parts.query or parts.fragment or "@" in parts.netloc):
        return url
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/{MASK}"


def _walk(value: object, change: Callable[[object, str], object], field: str = "") -> object:
    if field in SEALED_PARAMS and value is not None:
        return [_walk(v, change, field) for v in value] if isinstance(value, list) \
            else change(value, field)
    if isinstance(value, dict):
        return {k: _walk(v, change, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, change, field) for v in value]
    return value


def _seal(value: object, field: str) -> object:
    """A string sealed as itself, any other value (a number, a table) as its JSON."""
    if isinstance(value, str) and value.startswith(PREFIX):
        return value
    plain = "s" + value if isinstance(value, str) else "j" + json.dumps(value)
    key_id, cipher = _keys[0]
    sealed = cipher.encrypt(plain.encode(), [*_CONTEXT, field.encode()])
    return f"{PREFIX}{key_id}:{base64.urlsafe_b64encode(sealed).decode()}"


def _unseal(value: object, field: str) -> object:
    if not (isinstance(value, str) and value.startswith(PREFIX)):
        return value
    key_id, _, body = value[len(PREFIX):].partition(":")
    for known, cipher in _keys:
        if known == key_id:
            try:
                plain = cipher.decrypt(base64.urlsafe_b64decode(body.encode()),
                                       [*_CONTEXT, field.encode()]).decode()
            except (InvalidTag, ValueError):
                break
            return plain[1:] if plain[0] == "s" else json.loads(plain[1:])
    raise ValueError(f"{field}: a secret sealed with key {key_id} that no key of "
                     "`secret_keys` opens")
