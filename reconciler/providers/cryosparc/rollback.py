"""The rollback rule shared by backup restores and database migrations: a copy of an
instance's database taken at time T must never be put in service over project directories
whose exported records changed after T (the CryoSPARC guide: the database would describe
jobs and files the directories have moved past, and those results would be lost)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.providers.cryosparc.model import records_digest


@dataclass(frozen=True)
class NewerProject:
    uid: str
    project_dir: str
    newest: datetime


def newer_projects(documents: Iterable[dict[str, Any]], taken: datetime) -> list[NewerProject]:
    """The attached projects among ``documents`` (project documents) whose directories hold
    exported records modified after ``taken``."""
    found: list[NewerProject] = []
    for document in documents:
        directory = document.get("project_dir")
        if not directory or document.get("detached") or document.get("deleted") or not Path(directory).is_dir():
            continue
        try:
            _digest, newest = records_digest(Path(directory))
        except OSError:
            continue
        if newest is not None and newest > taken.timestamp():
            found.append(NewerProject(str(document.get("uid")), str(directory), datetime.fromtimestamp(newest, UTC)))
    return found


def describe(found: list[NewerProject]) -> str:
    return ", ".join(f"{item.uid} ({item.project_dir}, records changed {item.newest:%Y-%m-%d %H:%M:%S}Z)"
                     for item in found)
