"""`Idempotency-Key`: a retried request gets the first answer instead of a second upload.

Only successful answers are remembered, in the transaction that made them, for `TTL`.
The same key with a different request is a Conflict; an expired key is forgotten.
"""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from darkroom.catalog.models import IdempotencyKey, utcnow
from darkroom.errors import BadRequest, Conflict

TTL = timedelta(hours=24)
_VALID = re.compile(r"^[\x21-\x7e]{1,255}$")


def check_key(key: str) -> str:
    """The key if it is 1-255 visible ASCII characters, else BadRequest."""
    if not _VALID.match(key):
        raise BadRequest("Idempotency-Key must be 1-255 visible ASCII characters",
                         "bad_idempotency_key")
    return key


def recall(session: Session, key: str, request_hash: str) -> dict | None:
    """The remembered answer for `key`, None if there is none (or it expired)."""
    found = session.get(IdempotencyKey, key)
    if found is None:
        return None
    if found.expires_at <= utcnow():
        session.delete(found)
        session.flush()
        return None
    if found.request_hash != request_hash:
        raise Conflict("this Idempotency-Key was used for a different request",
                       "idempotency_conflict")
    return found.response


def remember(session: Session, key: str, request_hash: str, response: dict) -> None:
    """Keep `response` for `key` in the caller's transaction (a race loses at commit);
    expired keys are dropped on the way."""
    now = utcnow()
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= now))
    session.add(IdempotencyKey(key=key, request_hash=request_hash, response=response,
                               created_at=now, expires_at=now + TTL))
    session.flush()

