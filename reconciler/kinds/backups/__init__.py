"""MongoDB backups with retention, in mongodump-compatible formats, as a resource kind."""

from reconciler.kinds.backups.kind import BackupsKind

KIND = BackupsKind
