"""The config model: the engine's own sections plus every resource kind's sections."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, create_model
from pydantic.fields import FieldInfo

from reconciler.engine.kind import Kind
from reconciler.errors import ConfigError


class Section(BaseModel):
    """Base of every config table: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


def resolve_path(value: str, base_dir: Path | str | None) -> str:
    """A config path as used: ``~`` expanded, a relative path joined to the config's
    directory, normalised; URLs (``ssh://...``) unchanged."""
    if "://" in value:
        return value
    path = Path(os.path.expanduser(value))
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    return os.path.normpath(path)


def _resolve_against_config(value: str, info: ValidationInfo) -> str:
    return resolve_path(value, (info.context or {}).get("base_dir"))


LocalPath = Annotated[str, AfterValidator(_resolve_against_config)]
"""A path in the config: ``~`` expanded, relative paths resolved against the
config file's directory; URLs (``ssh://...``) pass through unchanged."""


class StateSection(Section):
    """Where the state database lives."""

    url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the state database. Default: SQLite at state/reconciler.db next to "
            "the config. A relative sqlite:/// path resolves against the config's directory. "
            "Example: postgresql+psycopg://reconciler@db.example.org/reconciler"
        ),
    )
    url_env: str | None = Field(
        default=None, description="Name of an environment variable holding the URL (keeps passwords out of the file)."
    )


def build_config_model(kinds: list[Kind]) -> type[BaseModel]:
    """The root config model: ``[state]`` plus the sections every kind declares.

    A kind's ``sections`` maps a top-level key to a type, or to ``(type, Field(...))``.
    Two kinds may share a section (backups and projects both read ``[databases]``)
    only when they declare the same type.

    Raises ConfigError when two kinds declare one section with different types.
    """
    fields: dict[str, Any] = {
        "state": (StateSection, Field(default_factory=StateSection, description=StateSection.__doc__))
    }
    owners: dict[str, str] = {"state": "engine"}
    for kind in kinds:
        for key, declaration in kind.sections.items():
            annotation, field_info = declaration if isinstance(declaration, tuple) else (declaration, None)
            if field_info is None:
                field_info = Field(default_factory=dict)
            assert isinstance(field_info, FieldInfo)
            if key in fields:
                if fields[key][0] != annotation:
                    raise ConfigError(
                        f"resource kinds {owners[key]} and {kind.name} declare the config section [{key}] differently"
                    )
                continue
            fields[key] = (annotation, field_info)
            owners[key] = kind.name
    return create_model(  # type: ignore[call-overload,no-any-return]
        "ReconcilerConfig",
        __config__=ConfigDict(extra="forbid", title="reconciler configuration"),
        __doc__="Desired state of research data: one reconciler.toml.",
        **fields,
    )
