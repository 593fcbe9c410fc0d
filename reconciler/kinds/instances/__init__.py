"""CryoSPARC instances as code: login users and scheduler lanes and targets."""

from reconciler.kinds.instances.kind import InstancesKind

KIND = InstancesKind
