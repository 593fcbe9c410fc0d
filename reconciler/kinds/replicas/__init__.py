"""File inventory and replicas (the MagAO-X data-file lifecycle) as a resource kind."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """``KIND`` (what the registry looks for) loads the kind on first use, so that importing one
    of this package's modules (a command's, a benchmark's) does not load the whole kind."""
    if name == "KIND":
        from reconciler.kinds.replicas.kind import ReplicasKind

        return ReplicasKind
    raise AttributeError(name)
