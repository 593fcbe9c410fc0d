"""How reconciler acts on an instance: ``mongo`` (directly) or ``cryosparcm`` (through its CLI)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from reconciler.errors import ApplyError, ObserveError
from reconciler.providers.cryosparc.drivers.cryosparcm import CryosparcmDriver
from reconciler.providers.cryosparc.drivers.mongo import MongoDriver
from reconciler.providers.mongo.connection import connect


@contextmanager
def open_reader(desired: Any, instance: str) -> Iterator[MongoDriver]:
    """A MongoDriver on ``instance``'s database (used for every read, whatever the driver).

    Raises ObserveError when the instance or its database is unknown or unreachable.
    """
    config = desired.instances.get(instance)
    if config is None:
        raise ObserveError(f"no [instances.{instance}] in the config")
    database = desired.databases.get(config.database)
    if database is None:
        raise ObserveError(f"[instances.{instance}] names the unknown database {config.database!r}")
    try:
        uri = database.resolve_uri()
    except ValueError as error:
        raise ObserveError(str(error)) from None
    client = connect(uri, database.connect_timeout.total_seconds())
    try:
        yield MongoDriver(client[database.database], instance, config.instance_id, config.owner_user_id)
    finally:
        client.close()


@contextmanager
def open_driver(desired: Any, instance: str) -> Iterator[Any]:
    """The driver that changes ``instance`` (its config's ``driver``)."""
    try:
        with open_reader(desired, instance) as reader:
            config = desired.instances[instance]
            if config.driver == "mongo":
                yield reader
            else:
                yield CryosparcmDriver(reader, instance, config.instance_id, config.cryosparcm, config.owner_user_id)
    except ObserveError as error:
        raise ApplyError(str(error)) from None
