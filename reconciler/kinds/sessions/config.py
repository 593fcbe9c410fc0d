"""Config of the sessions kind: ``[sessions."P12/S1"]``, ``[hooks]`` and ``[access]``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator

from reconciler.config.model import LocalPath, Section
from reconciler.units import Duration

Status = Literal["active", "archiving", "archived", "deleted"]
_KEY = re.compile(r"^P[1-9][0-9]*/S[1-9][0-9]*$")


class SessionConfig(Section):
    """Declared states of one Live session's datatypes (unset: left as they are)."""

    instance: str | None = Field(default=None, description="The [instances.*] entry; optional with one instance.")
    raw: Status | None = Field(default=None, description='"deleted" only records that another tool removed it.')
    micrographs: Status | None = Field(default=None, description="Declared state of the motion-corrected "
                                                                  "micrographs (deleting them needs --allow-destroy).")
    particles: Status | None = Field(default=None, description="Declared state of the extracted particles "
                                                                "(deleting them needs --allow-destroy).")
    metadata: Status | None = Field(default=None, description="Declared state of the metadata (CTF estimates, "
                                                               "exposure records).")
    thumbnails: Any = Field(default=None, description="Not settable: thumbnails come and go with micrographs.")

    @field_validator("thumbnails")
    @classmethod
    def _no_thumbnail_state(cls, value: Any) -> None:
        if value is not None:
            raise ValueError("thumbnails have no state of their own: they follow micrographs; remove this line")
        return None

    def declared(self) -> dict[str, str]:
        return {name: value for name in ("raw", "micrographs", "particles", "metadata")
                if (value := getattr(self, name)) is not None}


class HooksSection(Section):
    """Programs run when things change."""

    datatype_state: LocalPath | None = Field(
        default=None, description="Run as: HOOK project_uid session_uid datatype status, on every state change.")
    timeout: Duration = Field(default=timedelta(minutes=10), description="A hook running longer is stopped.")


class AccessSection(Section):
    """Who may apply what."""

    datatype_admins: list[str] | None = Field(
        default=None, description="OS users allowed to apply datatype state changes and deletions "
                                  "(unset: everyone who can run reconciler).")


def check_sessions(desired: Any) -> list[tuple[tuple[str | int, ...], str]]:
    problems: list[tuple[tuple[str | int, ...], str]] = []
    instances = getattr(desired, "instances", {}) or {}
    for key, session in (getattr(desired, "sessions", {}) or {}).items():
        if not _KEY.match(key):
            problems.append((("sessions", key), f'[sessions."{key}"]: write the key as "<project uid>/<session uid>", '
                                                'e.g. "P12/S1"'))
        if session.instance is None and len(instances) != 1:
            problems.append((("sessions", key), f'[sessions."{key}"] needs instance = "…" '
                                                f"({len(instances)} instances are configured)"))
        elif session.instance is not None and session.instance not in instances:
            known = ", ".join(sorted(instances)) or "none"
            problems.append((("sessions", key, "instance"),
                             f'[sessions."{key}"] instance = "{session.instance}" is not an [instances.*] entry '
                             f"(known: {known})"))
    return problems
