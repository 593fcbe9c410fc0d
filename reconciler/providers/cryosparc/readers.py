"""One open reader per CryoSPARC instance for a whole observation (used by every kind that
reads an instance's database)."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from reconciler.errors import ObserveError
from reconciler.providers.cryosparc import model
from reconciler.providers.cryosparc.drivers import open_reader
from reconciler.providers.cryosparc.drivers.mongo import MongoDriver


class Readers:
    """One open reader per instance for the whole observation (connect once each)."""

    def __init__(self, desired: Any, stack: ExitStack):
        self.desired = desired
        self.stack = stack
        self.open: dict[str, MongoDriver | ObserveError] = {}

    def get(self, instance: str) -> MongoDriver:
        if instance not in self.open:
            try:
                self.open[instance] = self.stack.enter_context(open_reader(self.desired, instance))
            except ObserveError as error:
                self.open[instance] = ObserveError(f"instance {instance}: {error}")
        found = self.open[instance]
        if isinstance(found, ObserveError):
            raise found
        return found


def find_imported(reader: MongoDriver, source_id: str, uid: str) -> dict[str, Any] | None:
    """The project on ``reader``'s instance that an attach recorded as imported from (source_id, uid)
    (used by the projects kind for single moves and the instances kind for whole migrations)."""
    for document in reader.db[model.PROJECTS].find({"imported_from.instance_id": source_id,
                                                    "imported_from.uid": uid}):
        if not document.get("deleted"):
            return dict(document)
    return None
