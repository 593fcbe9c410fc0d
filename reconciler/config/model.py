"""The config model: the engine's own sections plus every resource kind's sections."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from reconciler.errors import ConfigError
from reconciler.units import Duration

if TYPE_CHECKING:  # the engine is a layer above config: only its type is named here
    from reconciler.engine.kind import Kind


class Section(BaseModel):
    """Base of every config table: unknown keys are errors, never silently ignored, and values
    are taken as TOML typed them (strict: ``immutable = "yes"`` is an error, not true)."""

    model_config = ConfigDict(extra="forbid", strict=True)


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


class MonitoringSection(Section):
    """How each run tells the outside world how it went (docs/monitoring.md)."""

    textfile: LocalPath | None = Field(
        default=None,
        description="Prometheus metrics written after every plan, apply and reconcile, for node_exporter's textfile "
                    "collector, e.g. /var/lib/node_exporter/textfile_collector/reconciler.prom (must end in .prom).",
    )
    healthcheck_url: str | None = Field(
        default=None, description="A healthchecks.io-style check URL: apply and reconcile ping URL/start, then URL "
                                  "(success) or URL/fail, with the run's summary as the body.")
    healthcheck_url_env: str | None = Field(
        default=None, description="Name of an environment variable holding the check URL (it is the check's secret).")
    healthcheck_timeout: Duration = Field(
        default=timedelta(seconds=10), description="How long one ping may take; a ping never fails the run.")
    on_failure: list[str] = Field(
        default_factory=list,
        description='A command (argument list, no shell) run when apply or reconcile exits 1, e.g. '
                    '["/usr/local/bin/notify", "--to", "ops"]; the summary is on its standard input and in '
                    "$RECONCILER_SUMMARY.")
    on_failure_timeout: Duration = Field(default=timedelta(seconds=60), description="How long on_failure may run.")

    @field_validator("textfile")
    @classmethod
    def _prom_suffix(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith(".prom"):
            raise ValueError("node_exporter's textfile collector reads only files ending in .prom; name it so")
        return value

    @model_validator(mode="after")
    def _one_url(self) -> MonitoringSection:
        if self.healthcheck_url is not None and self.healthcheck_url_env is not None:
            raise ValueError("set healthcheck_url or healthcheck_url_env, not both")
        return self

    def check_url(self) -> str | None:
        """The health-check URL, or None. Raises ValueError naming an unset variable."""
        if self.healthcheck_url_env is None:
            return self.healthcheck_url
        value = os.environ.get(self.healthcheck_url_env)
        if not value:
            raise ValueError(f"[monitoring] healthcheck_url_env names ${self.healthcheck_url_env}, which is not set")
        return value


def build_config_model(kinds: list[Kind]) -> type[BaseModel]:
    """The root config model: ``[state]`` plus the sections every kind declares.

    A kind's ``sections`` maps a top-level key to a type, or to ``(type, Field(...))``.
    Two kinds may share a section (backups and projects both read ``[databases]``)
    only when they declare the same type.

    Raises ConfigError when two kinds declare one section with different types.
    """
    fields: dict[str, Any] = {
        "state": (StateSection, Field(default_factory=StateSection, description=StateSection.__doc__)),
        "monitoring": (MonitoringSection, Field(default_factory=MonitoringSection,
                                                description=MonitoringSection.__doc__)),
    }
    owners: dict[str, str] = {"state": "engine", "monitoring": "engine"}
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
