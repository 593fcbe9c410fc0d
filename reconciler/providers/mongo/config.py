"""The ``[databases.<name>]`` section (with its ``backup`` table), declared once here: the backups,
projects and sessions kinds all read it (``DATABASES_SECTION``)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, model_validator

from reconciler.config.model import LocalPath, Section
from reconciler.units import Duration


class RetentionConfig(Section):
    """restic's forget rules: each keep_* keeps the newest backup in each of the last N
    periods that have backups (-1: no limit); rules are ORed; empty keeps everything."""

    keep_last: int | None = Field(default=None, ge=-1, description="Keep the newest N backups.")
    keep_hourly: int | None = Field(default=None, ge=-1,
                                    description="Keep the newest backup of each of the last N hours.")
    keep_daily: int | None = Field(default=None, ge=-1,
                                   description="Keep the newest backup of each of the last N days.")
    keep_weekly: int | None = Field(default=None, ge=-1,
                                    description="Keep the newest backup of each of the last N weeks.")
    keep_monthly: int | None = Field(default=None, ge=-1,
                                     description="Keep the newest backup of each of the last N months.")
    keep_yearly: int | None = Field(default=None, ge=-1,
                                    description="Keep the newest backup of each of the last N years.")
    keep_within: Duration | None = Field(default=None, description="Keep every backup younger than this (e.g. \"2d\").")



class BackupConfig(Section):
    """How often a database is backed up, where, in which format, and how long backups are kept."""

    to: LocalPath = Field(description="Local directory holding the backups (it must exist).")
    every: Duration = Field(default=timedelta(days=1), description="A backup is due when the newest is this old.")
    format: Literal["archive", "directory"] = Field(
        default="archive", description='"archive": one mongodump --archive file; "directory": <db>/<coll>.bson.')
    method: Literal["python", "mongodump", "auto"] = Field(
        default="auto", description='"auto": mongodump when on PATH, else python (pymongo, raw BSON).')
    compress: bool = Field(default=True, description="gzip, as mongodump --gzip.")
    consistent: Literal["oplog"] | None = Field(
        default=None, description='"oplog": also capture the oplog entries written during the dump (replica '
        "sets only), as mongodump --oplog; restore replays them, so the backup is one point in time.")
    retention: RetentionConfig = Field(default_factory=RetentionConfig)


class DatabaseConfig(Section):
    """A MongoDB database. Credentials belong in the environment: use uri_env."""

    uri: str | None = Field(default=None, description='"mongodb://host:port" (no password here: use uri_env).')
    uri_env: str | None = Field(default=None, description="Environment variable holding the connection string.")
    database: str = Field(description='The database name, e.g. "meteor".')
    collections: list[str] = Field(default_factory=lambda: ["*"], description='["*"] or a list of collection names.')
    connect_timeout: Duration = Field(default=timedelta(seconds=5),
                                      description="How long to wait for the server before the address is an error.")
    backup: BackupConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DatabaseConfig:
        if (self.uri is None) == (self.uri_env is None):
            raise ValueError("set exactly one of uri and uri_env")
        return self

    def resolve_uri(self) -> str:
        """The connection string. Raises ValueError naming an unset variable (never the value)."""
        from reconciler.secrets import remember, remember_variable

        if self.uri is not None:
            remember(self.uri)
            return self.uri
        remember_variable(self.uri_env)
        value = os.environ.get(self.uri_env or "")
        if not value:
            raise ValueError(f"${self.uri_env} is not set; export the connection string in it")
        return value


DATABASES_SECTION: dict[str, Any] = {
    "databases": (dict[str, DatabaseConfig],
                  Field(default_factory=dict, description="MongoDB databases, and how each is backed up.")),
}
