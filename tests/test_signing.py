"""URL signatures: canonical form, rotation, expiry, constant-time refusal codes."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from darkroom.errors import Forbidden, Unauthorized
from darkroom.signing import canonical, sign_url, verify


def split(url: str):
    parts = urlsplit(url)
    return parts.path, parse_qsl(parts.query, keep_blank_values=True)


def test_signed_url_verifies_and_query_order_does_not_matter():
    url = sign_url("k1", "/img/a.jpg", [("w", "100"), ("fm", "webp")])
    path, query = split(url)
    verify(["k1"], path, list(reversed(query)))


def test_canonical_form_sorts_and_drops_the_signature():
    assert canonical("/img/a", [("w", "1"), ("s", "x"), ("fm", "png")]) == "/img/a?fm=png&w=1"
    assert canonical("/img/a", []) == "/img/a"


def test_rotation_accepts_any_configured_key():
    path, query = split(sign_url("old", "/img/a.jpg", [("w", "5")]))
    verify(["new", "old"], path, query)


@pytest.mark.parametrize("mutate", [
    lambda p, q: (p + "x", q),
    lambda p, q: (p, q + [("h", "9")]),
    lambda p, q: (p, [(k, "6" if k == "w" else v) for k, v in q]),
    lambda p, q: (p, [(k, v.upper() if k == "s" else v) for k, v in q]),
])
def test_any_change_breaks_the_signature(mutate):
    path, query = split(sign_url("k", "/img/a.jpg", [("w", "5")]))
    with pytest.raises(Forbidden) as caught:
        verify(["k"], *mutate(path, query))
    assert caught.value.code == "bad_signature"


def test_missing_signature_is_401():
    with pytest.raises(Unauthorized):
        verify(["k"], "/img/a.jpg", [("w", "5")])


def test_expiry_is_signed_and_enforced():
    path, query = split(sign_url("k", "/img/a.jpg", [("w", "5")], expires=1000))
    verify(["k"], path, query, now=999)
    with pytest.raises(Forbidden) as caught:
        verify(["k"], path, query, now=1001)
    assert caught.value.code == "expired_signature"
    stretched = [(k, "999999999999" if k == "exp" else v) for k, v in query]
    with pytest.raises(Forbidden) as caught:
        verify(["k"], path, stretched, now=1001)
    assert caught.value.code == "bad_signature"
