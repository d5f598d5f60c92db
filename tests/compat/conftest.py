"""The HTTP fixtures of tests/server (an app on a temporary data dir holding the corpus)."""

from server.conftest import client, make_client  # noqa: F401  (re-exported fixtures)
