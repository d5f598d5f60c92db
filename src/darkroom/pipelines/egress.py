"""Where a pipeline's `webhook` step may connect: public addresses, and the private ones an
operator allows by host name (`pipelines.webhook_hosts`).

Anyone who may define a pipeline chooses its URL, so without this rule a pipeline could
make the worker call the cloud's metadata service or an internal admin port and read the
answer's status back from the job. The host is resolved here and every address it has
must be public; the check runs before each delivery.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from darkroom.errors import Forbidden


def check_public(url: str, allowed_hosts: list[str]) -> None:
    """Raise Forbidden(webhook_blocked) unless `url`'s host is allowed or only public."""
    host = (urlsplit(url).hostname or "").lower()
    if host in {h.lower() for h in allowed_hosts}:
        return
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as error:
        raise Forbidden(f"webhook host {host!r} does not resolve: {error}",
                        "webhook_blocked") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not address.is_global or address.is_multicast:
            raise Forbidden(f"webhook host {host!r} is {address}, not a public address; "
                            "allow it in pipelines.webhook_hosts", "webhook_blocked")
