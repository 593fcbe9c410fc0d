"""CryoSPARC Live session data management: datatype states, deletions, the state-change hook."""

from reconciler.kinds.sessions.kind import SessionsKind

KIND = SessionsKind
