"""Config of the instances kind: ``[users."<email>"]`` and ``[lanes.<name>]``.

Both apply to every ``[instances.*]`` entry unless ``instances = [...]`` narrows them.
A password is never written in the config: ``initial_password_env`` names the
environment variable that holds it, read only by the executor that creates the account.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from reconciler.config.model import LocalPath, Section

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USERNAME = re.compile(r"^[A-Za-z0-9._-]+$")
_PASSWORD_KEYS = ("password", "initial_password", "password_hash")


def normalise_email(email: str) -> str:
    """The form emails are matched in (CryoSPARC and oSPARC match users by email, whatever the case)."""
    return email.strip().lower()


def check_email(value: str) -> str:
    """Raise ValueError unless ``value`` looks like an email address (something@domain)."""
    local, at, domain = value.strip().partition("@")
    if not at or not local or not domain or "@" in domain or any(ch.isspace() for ch in value.strip()):
        raise ValueError(f"{value!r} is not an email address; users are keyed by email, e.g. "
                         '[users."alice@example.org"]')
    return value


class UserConfig(Section):
    """A CryoSPARC login, identified by the email it is keyed by."""

    instances: list[str] | None = Field(
        default=None, description="The [instances.*] this user must exist on (default: every instance).")
    name: str | None = Field(default=None, description='Full name, e.g. "Alice Liddell" (first word: first name).')
    username: str | None = Field(default=None,
                                 description="Login name (default: the email's part before '@').")
    role: Literal["user", "admin"] | None = Field(
        default=None, description='"user" or "admin". Omitted: a new account is a "user" and an existing '
                                  "account's role is left as it is.")
    initial_password_env: str | None = Field(
        default=None,
        description="Environment variable holding the password, used only when the account is created; "
                    "never read back, logged or planned. Needed to create the account.")
    absent: bool = Field(default=False, description="Remove this login (destructive; refused while the user owns "
                                                    "projects, which the plan names).")

    @model_validator(mode="before")
    @classmethod
    def _no_password(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in _PASSWORD_KEYS:
                if key in data:
                    raise ValueError(f"{key} must not be written in the config: put the password in an environment "
                                     "variable and name it with initial_password_env = \"ALICE_PW\"")
        return data

    @field_validator("initial_password_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("initial_password_env names an environment variable (like ALICE_PW), "
                             "not the password itself")
        return value

    @field_validator("username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        if value is not None and not _USERNAME.match(value):
            raise ValueError(f"username {value!r} may hold only letters, digits, '.', '_' and '-'")
        return value

    def first_last(self) -> tuple[str, str]:
        """(first name, last name) from ``name``: its first word and the rest."""
        parts = (self.name or "").split(None, 1)
        return (parts[0] if parts else "", parts[1] if len(parts) > 1 else "")


class TargetConfig(Section):
    """A worker node of a "node" lane (what `cryosparcw connect` registers)."""

    hostname: str = Field(description="The worker's hostname as CryoSPARC names the target.")
    ssh: str = Field(description='How the master reaches it (CryoSPARC\'s ssh_str), e.g. "cryosparc@gpu1".')
    worker_path: str = Field(description="Absolute path of the worker installation, e.g. /opt/cryosparc_worker.")
    ssd_path: str | None = Field(default=None, description="SSD cache directory (omit for no SSD cache).")
    ssd_quota_mb: int | None = Field(default=None, description="SSD cache quota in MB (default: none).")

    @field_validator("worker_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("worker_path must be absolute, e.g. \"/opt/cryosparc_worker\"")
        return value


class LaneConfig(Section):
    """A scheduler lane: worker nodes ("node") or a cluster ("cluster", from cluster_info.json and a script)."""

    instances: list[str] | None = Field(
        default=None, description="The [instances.*] this lane must exist on (default: every instance).")
    type: Literal["node", "cluster"] = Field(description='"node" (worker targets) or "cluster".')
    title: str | None = Field(default=None, description="Title shown in CryoSPARC (default: the lane's name).")
    targets: list[TargetConfig] = Field(default_factory=list,
                                        description="The worker nodes of a node lane.")
    cluster_info: LocalPath | None = Field(
        default=None, description="A cluster lane's cluster_info.json (as for `cryosparcm cluster connect`).")
    cluster_script: LocalPath | None = Field(
        default=None, description="A cluster lane's submission script template (cluster_script.sh).")
    prune: bool = Field(default=False, description="Remove targets of this lane the config does not name "
                                                   "(destructive: needs --allow-destroy).")

    @model_validator(mode="after")
    def _shape(self) -> LaneConfig:
        if self.type == "node":
            if not self.targets:
                raise ValueError("a node lane needs at least one target: targets = [{ hostname = \"gpu1\", "
                                 "ssh = \"cryosparc@gpu1\", worker_path = \"/opt/cryosparc_worker\" }]")
            if self.cluster_info or self.cluster_script:
                raise ValueError("cluster_info and cluster_script belong to type = \"cluster\" lanes")
            names = [target.hostname for target in self.targets]
            if len(set(names)) != len(names):
                raise ValueError("a target hostname appears twice in this lane; keep one entry per worker")
        else:
            if self.targets:
                raise ValueError("a cluster lane has no targets; set cluster_info and cluster_script instead")
            if not self.cluster_info or not self.cluster_script:
                raise ValueError("a cluster lane needs cluster_info = \"lanes/cluster_info.json\" and "
                                 "cluster_script = \"lanes/cluster_script.sh\"")
        return self


def applies_to(entry_instances: list[str] | None, instance: str) -> bool:
    return entry_instances is None or instance in entry_instances


def check_instances_kind(desired: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-references: unknown instances, emails, two entries for one email, clashing hostnames."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    instances = getattr(desired, "instances", {}) or {}
    known = ", ".join(sorted(instances)) or "none"
    seen: dict[str, str] = {}
    for email, user in (getattr(desired, "users", {}) or {}).items():
        try:
            check_email(email)
        except ValueError as error:
            problems.append((("users", email), str(error)))
        normal = normalise_email(email)
        if normal in seen:
            problems.append((("users", email), f'[users."{email}"] is the same email as [users."{seen[normal]}"] '
                                               "(emails match whatever their case); keep one entry"))
        seen.setdefault(normal, email)
        for index, name in enumerate(user.instances or []):
            if name not in instances:
                problems.append((("users", email, "instances", index),
                                 f'[users."{email}"] instances names "{name}", which is not an [instances.*] entry '
                                 f"(known: {known})"))
    for name, config in instances.items():
        source = config.migrate_from
        if source is None:
            continue
        if source not in instances or source == name:
            problems.append((("instances", name, "migrate_from"),
                             f'[instances.{name}] migrate_from = "{source}" must name another [instances.*] entry '
                             f"(known: {known})"))
        for old, new in config.migrate_paths.items():
            if not old.startswith("/") or not new.startswith("/"):
                problems.append((("instances", name, "migrate_paths"),
                                 f'[instances.{name}] migrate_paths maps absolute prefixes, e.g. '
                                 '{ "/old/storage" = "/new/storage" }'))
    hosts: dict[tuple[str, str], str] = {}
    for lane_name, lane in (getattr(desired, "lanes", {}) or {}).items():
        for index, name in enumerate(lane.instances or []):
            if name not in instances:
                problems.append((("lanes", lane_name, "instances", index),
                                 f'[lanes.{lane_name}] instances names "{name}", which is not an [instances.*] '
                                 f"entry (known: {known})"))
        for index, target in enumerate(lane.targets):
            for instance in instances:
                if not applies_to(lane.instances, instance):
                    continue
                other = hosts.get((instance, target.hostname))
                if other is not None and other != lane_name:
                    problems.append((("lanes", lane_name, "targets", index, "hostname"),
                                     f"[lanes.{lane_name}] target {target.hostname} is already a target of "
                                     f"[lanes.{other}] on {instance}; a worker belongs to one lane"))
                hosts.setdefault((instance, target.hostname), lane_name)
    return problems
