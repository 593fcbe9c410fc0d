"""Config of the projects kind: ``[instances.<name>]`` and ``[projects.<name>]``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from reconciler.config.model import LocalPath, Section
from reconciler.providers.cryosparc.model import is_project_uid

State = Literal["active", "archived", "detached"]


class ProjectConfig(Section):
    """Where a project directory must live, on which instance, and in which state."""

    uid: str | None = Field(default=None, description='The project uid where it lives now, e.g. "P12" '
                                                     '(not with source).')
    source: str | None = Field(default=None, description='"bundle:/path/P12.bundle.tar": import this bundle '
                                                         "when the project is not on the instance yet.")
    from_: str | None = Field(default=None, alias="from",
                              description="The instance it lives on now; omit when it stays on `instance`.")
    instance: str = Field(description="The instance it must end up on.")
    path: LocalPath = Field(description="The desired absolute project directory.")
    state: State = Field(default="active", description='"active", "archived" or "detached".')
    force: bool = Field(default=False,
                        description="Attach even when cs.lock names another instance "
                                    "(only when that instance is gone).")

    model_config = {**Section.model_config, "populate_by_name": True}

    @field_validator("uid")
    @classmethod
    def _uid(cls, value: str | None) -> str | None:
        if value is not None and not is_project_uid(value):
            raise ValueError(f"{value!r} is not a project uid; write it like \"P12\"")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("bundle:"):
            raise ValueError('write source as "bundle:/path/to/P12.bundle.tar"')
        return value

    @model_validator(mode="after")
    def _uid_or_source(self) -> ProjectConfig:
        if (self.uid is None) == (self.source is None):
            raise ValueError("set exactly one of uid (a project on an instance) and source (a bundle to import)")
        if self.source is not None and self.from_ is not None:
            raise ValueError("a project imported from a bundle has no `from` instance")
        return self

    @property
    def bundle(self) -> str | None:
        return self.source[len("bundle:"):] if self.source else None

    @property
    def source_instance(self) -> str:
        return self.from_ or self.instance


def _inside(inner: str, outer: str) -> bool:
    return inner != outer and Path(inner).is_relative_to(outer)


def check_projects(desired: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-references: instances, their databases, duplicate and nested project entries."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    instances = getattr(desired, "instances", {}) or {}
    databases = getattr(desired, "databases", {}) or {}
    ids: dict[str, str] = {}
    for key, instance in instances.items():
        if instance.database not in databases:
            known = ", ".join(sorted(databases)) or "none"
            problems.append((("instances", key, "database"),
                             f"[instances.{key}] database = \"{instance.database}\" is not a [databases.*] entry "
                             f"(known: {known})"))
        if instance.instance_id in ids:
            problems.append((("instances", key, "instance_id"),
                             f"[instances.{key}] has the same instance_id as [instances.{ids[instance.instance_id]}]"))
        ids.setdefault(instance.instance_id, key)
    seen_uids: dict[tuple[str, str], str] = {}
    seen_paths: dict[str, str] = {}
    projects = getattr(desired, "projects", {}) or {}
    for key, project in projects.items():
        for field_name, name in (("instance", project.instance), ("from", project.from_)):
            if name is not None and name not in instances:
                known = ", ".join(sorted(instances)) or "none"
                problems.append((("projects", key, field_name),
                                 f"[projects.{key}] {field_name} = \"{name}\" is not an [instances.*] entry "
                                 f"(known: {known})"))
        if not os.path.isabs(project.path):
            problems.append((("projects", key, "path"), f"[projects.{key}] path must be absolute"))
        identity = (project.source_instance, project.uid or project.source or "")
        if identity in seen_uids:
            problems.append((("projects", key, "uid"),
                             f"[projects.{key}] declares {project.uid or project.source} on "
                             f"{project.source_instance} again (already [projects.{seen_uids[identity]}]); "
                             "keep one entry per project"))
        seen_uids.setdefault(identity, key)
        if project.path in seen_paths:
            problems.append((("projects", key, "path"),
                             f"[projects.{key}] path is also the path of [projects.{seen_paths[project.path]}]"))
        seen_paths.setdefault(project.path, key)
    for key, project in projects.items():
        for other_key, other in projects.items():
            if _inside(project.path, other.path):
                problems.append((("projects", key, "path"),
                                 f"[projects.{key}] path {project.path} is inside the directory of "
                                 f"[projects.{other_key}] ({other.path}); project directories cannot nest"))
    return problems
