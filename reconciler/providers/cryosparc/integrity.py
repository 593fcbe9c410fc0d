"""Integrity checks for the stages of an instance merge (oSPARC's migration note: integrity
checks and a rollback checkpoint at every stage), on a CryoSPARC-shaped database.

A stage takes a ``Census`` of the target before it writes and checks, after, that the
document counts changed exactly as the stage should have changed them, that it introduced
no dangling reference (a workspace or job whose ``project_uid`` names no project, a project
whose ``owner_user_id`` names no user; references that dangled before the stage are not its
doing and are left to the instance's owner), and, for an attach, that what is in the
database and in the re-exported records is, by sha256, what the exported records said.
Pure functions over a database handle; the caller rolls its stage back on a problem.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from reconciler.providers.cryosparc import model

COUNTED = (model.PROJECTS, model.WORKSPACES, model.JOBS, model.USERS)


@dataclass(frozen=True)
class Census:
    """Document counts per collection and the dangling references of one database."""

    counts: dict[str, int]
    dangling: frozenset[str]


def census(db: Any) -> Census:
    counts = {name: db[name].count_documents({}) for name in COUNTED}
    return Census(counts=counts, dangling=frozenset(dangling(db)))


def dangling(db: Any) -> list[str]:
    """Every reference that names a missing document: ``"<n> <collection>: project_uid <uid>"``
    and ``"projects <uid>: owner_user_id <id>"``. Workspaces and jobs are compared by their
    distinct ``project_uid`` values (the server does the work: one value per project)."""
    projects = {doc["uid"] for doc in db[model.PROJECTS].find({}, {"uid": 1}) if "uid" in doc}
    users = {doc["_id"] for doc in db[model.USERS].find({}, {"_id": 1})}
    found = []
    for collection in (model.WORKSPACES, model.JOBS):
        for value in db[collection].distinct("project_uid"):
            if value is not None and value not in projects:
                count = db[collection].count_documents({"project_uid": value})
                found.append(f"{count} {collection}: project_uid {value}")
        if db[collection].count_documents({"project_uid": None}, limit=1):
            found.append(f"{collection} without a project_uid")
    for doc in db[model.PROJECTS].find({}, {"uid": 1, "owner_user_id": 1}):
        owner = doc.get("owner_user_id")
        if owner and owner not in users:
            found.append(f"{model.PROJECTS} {doc.get('uid')}: owner_user_id {owner}")
    return sorted(found)


def documents_digest(workspaces: list[dict[str, Any]], jobs: list[dict[str, Any]]) -> str:
    """sha256 over a project's workspace and job documents in the exported records' format
    (extended JSON, sorted keys, ``_id`` left out), each list in uid order."""
    digest = hashlib.sha256()
    for name, documents in (("workspaces", workspaces), ("jobs", jobs)):
        clean = sorted(({key: value for key, value in doc.items() if key != "_id"} for doc in documents),
                       key=lambda doc: str(doc.get("uid")))
        digest.update(name.encode() + b"\0" + model.dumps(clean).encode())
    return digest.hexdigest()


def stored_digest(db: Any, uid: str) -> str:
    return documents_digest(list(db[model.WORKSPACES].find({"project_uid": uid})),
                            list(db[model.JOBS].find({"project_uid": uid})))


def compare(before: Census, after: Census, expected: dict[str, int]) -> list[str]:
    """Problems: a collection whose count did not change by ``expected[name]`` (0 when absent),
    and references that dangle after the stage but did not before."""
    problems = []
    for name in COUNTED:
        change = after.counts[name] - before.counts[name]
        if change != expected.get(name, 0):
            problems.append(f"{name}: {before.counts[name]} -> {after.counts[name]} documents, "
                            f"expected {before.counts[name] + expected.get(name, 0)}")
    new = sorted(after.dangling - before.dangling)
    if new:
        problems.append("dangling " + ", ".join(new[:5]) + (f" (and {len(new) - 5} more)" if len(new) > 5 else ""))
    return problems
