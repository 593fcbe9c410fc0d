"""Finding resource kinds: built-in modules, entry points, and RECONCILER_PLUGINS."""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
from importlib.metadata import entry_points

from reconciler.engine.kind import Kind
from reconciler.engine.memo import PLUGINS_VARIABLE
from reconciler.errors import ConfigError

ENTRY_POINT_GROUP = "reconciler.kinds"
BUILT_IN_PACKAGE = "reconciler.kinds"


def _import_object(reference: str) -> object:
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attribute) if attribute else module.KIND
    except (ImportError, AttributeError) as error:
        raise ConfigError(
            f"{PLUGINS_VARIABLE}: cannot load resource kind '{reference}' ({error}); "
            "write it as module.path:ClassName"
        ) from error


def kind_classes(include_plugins: bool = True) -> list[type[Kind]]:
    """Every resource kind class: built-in ones (sorted by module name), then entry
    points, then those named in $RECONCILER_PLUGINS (``module:Class``, comma-separated).

    Raises ConfigError when a plugin cannot be imported or two kinds claim the
    same address prefix.
    """
    return list(_discover(include_plugins, os.environ.get(PLUGINS_VARIABLE, "")))


@functools.lru_cache(maxsize=8)
def _discover(include_plugins: bool, plugins: str) -> tuple[type[Kind], ...]:
    """Found once per process and $RECONCILER_PLUGINS: reading every installed package's
    entry points takes tens of milliseconds, and the CLI needs the kinds twice (their
    commands, then the run)."""
    found: list[type[Kind]] = []
    # The built-in kinds are found by name (the engine is a layer below them and names none).
    package = importlib.import_module(BUILT_IN_PACKAGE)
    for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name):
        module = importlib.import_module(f"{BUILT_IN_PACKAGE}.{module_info.name}")
        kind = getattr(module, "KIND", None)
        if kind is not None:
            found.append(kind)
    if include_plugins:
        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            found.append(entry_point.load())
        for reference in filter(None, (part.strip() for part in plugins.split(","))):
            found.append(_import_object(reference))  # type: ignore[arg-type]
    prefixes: dict[str, str] = {}
    unique: list[type[Kind]] = []
    for kind in found:
        if kind in unique:
            continue
        if not (isinstance(kind, type) and issubclass(kind, Kind)):
            raise ConfigError(f"{kind!r} is not a reconciler resource kind (a subclass of reconciler.engine.kind.Kind)")
        if kind.address_prefix in prefixes:
            raise ConfigError(
                f"resource kinds {prefixes[kind.address_prefix]} and {kind.name} both claim "
                f"addresses '{kind.address_prefix}:…'; remove one of them"
            )
        prefixes[kind.address_prefix] = kind.name
        unique.append(kind)
    return tuple(unique)


def load_kinds(include_plugins: bool = True) -> list[Kind]:
    """Instances of every resource kind, ready for one run."""
    return [kind() for kind in kind_classes(include_plugins)]
