"""File inventory and replicas (the MagAO-X data-file lifecycle) as a resource kind."""

from reconciler.kinds.replicas.kind import ReplicasKind

KIND = ReplicasKind
