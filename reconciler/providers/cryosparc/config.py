"""The ``[instances.<name>]`` section, declared once here: the projects and sessions kinds
(and any kind that acts on a CryoSPARC instance) read it through ``INSTANCES_SECTION``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from reconciler.config.model import Section


class InstanceConfig(Section):
    """A CryoSPARC instance: its database (a [databases.*] entry) and how reconciler acts on it."""

    database: str = Field(description="The [databases.*] entry of this instance's MongoDB (meteor).")
    driver: Literal["mongo", "cryosparcm"] = Field(
        default="mongo",
        description='"mongo": act on the database and directories directly; '
                    '"cryosparcm": run `cryosparcm cli` calls of a real installation.')
    instance_id: str = Field(description="What cs.lock holds for directories attached to this instance.")
    cryosparcm: str = Field(default="cryosparcm",
                            description='The cryosparcm program (driver = "cryosparcm"), e.g. '
                                        '"/opt/cryosparc/cryosparc_master/bin/cryosparcm".')
    owner_user_id: str | None = Field(
        default=None, description="User id that attached projects belong to when the original owner is unknown here.")
    migrate_from: str | None = Field(
        default=None, description="Move the whole facility from this [instances.*] entry: its users and lanes "
                                  "(as declared) first, then every project not declared in [projects.*].")
    migration: Literal["attach", "database"] = Field(
        default="attach", description='How migrate_from moves projects: "attach" (the guide\'s alternative B: '
                                      'detach there, copy when the path changes, attach here); "database" '
                                      "(alternative A: archive what moves, copy the database, move the "
                                      "directories, unarchive).")
    migrate_paths: dict[str, str] = Field(
        default_factory=dict, description='Where migrated project directories go: old path prefix -> new prefix, '
                                          'e.g. { "/old/storage" = "/new/storage" } (default: paths stay).')
    master_hostname: str | None = Field(
        default=None, description='The master\'s hostname as workers reach it: with driver = "cryosparcm", node '
                                  "targets are connected by running `cryosparcw connect --master <this>` on the "
                                  "worker over ssh (v5: `cryosparcm worker connect`); unset: written to the database.")
    base_port: int = Field(default=39000, description="The master's base port (cryosparcw connect --port).")
    prune_lanes: bool = Field(
        default=False, description="Remove scheduler lanes (and their targets) that no [lanes.*] entry names for this "
                                   "instance (destructive: needs --allow-destroy).")

    @field_validator("instance_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("instance_id must not be empty")
        return value


INSTANCES_SECTION: dict[str, Any] = {
    "instances": (dict[str, InstanceConfig],
                  Field(default_factory=dict, description="CryoSPARC instances (their meteor databases).")),
}
