"""Which computer this run is on: the name lock rows, journal runs and host-scoped origins use.

``$RECONCILER_HOST`` overrides the system's host name (``socket.gethostname()``), for a host
whose name is not the one the config uses (a container, a renamed machine). Names compare
without case, and a short name matches its fully qualified form (``exao1`` is
``exao1.example.org``).
"""

from __future__ import annotations

import os
import socket

HOST_VARIABLE = "RECONCILER_HOST"


def this_host() -> str:
    """This host's name: ``$RECONCILER_HOST`` when set, else the system's host name."""
    return os.environ.get(HOST_VARIABLE, "").strip() or socket.gethostname()


def same_host(first: str, second: str) -> bool:
    """Whether two host names name the same computer (case-insensitive; ``exao1`` matches
    ``exao1.example.org``, but ``exao1.a.org`` does not match ``exao1.b.org``)."""
    one, two = first.strip().lower().rstrip("."), second.strip().lower().rstrip(".")
    if one == two:
        return True
    if "." in one and "." in two:
        return False
    return one.split(".", 1)[0] == two.split(".", 1)[0]


def is_this_host(name: str) -> bool:
    """Whether ``name`` is this host (see ``same_host``)."""
    return same_host(name, this_host())
