"""CryoSPARC projects on instances: declared locations and states, moves and migrations."""

from reconciler.kinds.projects.kind import ProjectsKind

KIND = ProjectsKind
