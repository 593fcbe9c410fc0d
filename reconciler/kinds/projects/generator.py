"""Building realistic CryoSPARC-shaped instances for tests, demos and benchmarks
(``reconciler dev make-instance``): users and scheduler config, projects with
jobs (parents/children), workspaces, Live sessions with data files for every
datatype, exported records and cs.lock in each project directory."""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reconciler.providers.cryosparc import model
from reconciler.providers.cryosparc.model import JOBS, PROJECTS, SCHED_CONFIG, USERS, WORKSPACES, Records

JOB_TYPES = ["import_movies", "patch_motion_correction_multi", "patch_ctf_estimation_multi", "blob_picker_gpu",
             "extract_micrographs_multi", "class_2D", "homo_abinit", "homo_refine_new", "nonuni_refine_new"]
USERS_SEED = [("alice", "alice@example.org"), ("bob", "bob@example.org"), ("cryosparc", "admin@example.org")]
TITLES = ["apoferritin", "beta-galactosidase", "TRPV1 nanodisc", "GABA-A receptor", "spliceosome",
          "ribosome 70S", "aldolase", "proteasome 20S", "hemagglutinin", "spike trimer"]


@dataclass
class GeneratedProject:
    uid: str
    title: str
    project_dir: Path
    jobs: list[str] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)


def _slug(title: str) -> str:
    return "CS-" + re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()


def _write(path: Path, size: int, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rng.randbytes(size))


def _session(project_dir: Path, raw_root: Path, project_uid: str, workspace_uid: str, session_uid: str,
             movies: int, status: str, rng: random.Random) -> dict[str, Any]:
    """A Live session's files (each datatype's directory) and its workspace document."""
    session_dir = project_dir / session_uid
    raw_dir = raw_root / f"{project_uid}-{session_uid}"
    sizes = {name: 0 for name in ("raw", "micrographs", "thumbnails", "particles", "metadata")}
    for index in range(1, movies + 1):
        stem = f"movie_{index:04d}"
        raw = raw_dir / f"{stem}.tif"
        _write(raw, 4096 + rng.randrange(2048), rng)
        link = session_dir / "import_movies" / raw.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            os.symlink(raw, link)
        sizes["raw"] += raw.stat().st_size
        for datatype, folder, suffix, size in (("micrographs", "motioncorrected", "_patch_aligned.mrc", 2048),
                                               ("thumbnails", "thumbnails", "_thumb.png", 256),
                                               ("particles", "extract", "_particles.mrc", 1024),
                                               ("metadata", "ctfestimated", "_ctf.mrc", 128)):
            path = session_dir / folder / f"{stem}{suffix}"
            _write(path, size + rng.randrange(64), rng)
            sizes[datatype] += path.stat().st_size
    exposures = session_dir / "exposures.bson"
    _write(exposures, 512, rng)
    sizes["metadata"] += exposures.stat().st_size
    return {
        "uid": workspace_uid, "project_uid": project_uid, "workspace_type": "live", "session_uid": session_uid,
        "session_dir": str(session_dir), "title": f"Session {session_uid}", "status": status,
        "created_at": datetime.now(UTC).replace(microsecond=0),
        "data_management": {name: {"status": "active", "prev_status": None, "size": size}
                            for name, size in sizes.items()},
    }


def make_instance(db: Any, root: Path, instance_id: str, *, projects: int = 3, jobs: int = 6, sessions: int = 1,
                  movies: int = 4, first_uid: int = 1, running_jobs: int = 0, seed: int = 1,
                  raw_root: Path | None = None) -> list[GeneratedProject]:
    """Fill ``db`` (an empty or existing meteor database) and ``root`` with ``projects`` projects.

    ``running_jobs`` marks that many jobs of the first project as running. Returns
    what was made.
    """
    taken = [f"P{n}" for n in range(first_uid, first_uid + projects) if db[PROJECTS].find_one({"uid": f"P{n}"})]
    if taken:
        raise ValueError(f"{db.name} already has {', '.join(taken[:5])}; start after them with first_uid")
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    raw_root = raw_root or root / "raw-movies"
    if db[USERS].count_documents({}) == 0:
        db[USERS].insert_many([{"_id": f"user-{name}", "name": name, "emails": [{"address": email}]}
                               for name, email in USERS_SEED])
        db[SCHED_CONFIG].insert_one({"_id": "lanes", "lanes": [{"name": "default", "type": "node"}]})
    made: list[GeneratedProject] = []
    base_time = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    for number in range(first_uid, first_uid + projects):
        uid = f"P{number}"
        title = f"{TITLES[(number - 1) % len(TITLES)]} {number}"
        project_dir = root / _slug(title)
        project_dir.mkdir(parents=True, exist_ok=True)
        created = base_time + timedelta(days=number)
        project = {"uid": uid, "uid_num": number, "title": title, "project_dir": str(project_dir),
                   "owner_user_id": f"user-{USERS_SEED[number % 2][0]}", "archived": False, "detached": False,
                   "deleted": False, "created_at": created, "description": f"generated project {uid}"}
        workspaces = [{"uid": "W1", "project_uid": uid, "workspace_type": "base", "title": "Workspace 1",
                       "created_at": created}]
        generated = GeneratedProject(uid=uid, title=title, project_dir=project_dir)
        for index in range(1, sessions + 1):
            session_uid = f"S{index}"
            workspaces.append(_session(project_dir, raw_root, uid, f"W{index + 1}", session_uid, movies,
                                       "completed" if index < sessions or sessions == 1 else "running", rng))
            generated.sessions.append(session_uid)
        job_docs = []
        for index in range(1, jobs + 1):
            job_uid = f"J{index}"
            parents = [f"J{index - 1}"] if index > 1 else []
            children = [f"J{index + 1}"] if index < jobs else []
            busy = number == first_uid and index > jobs - running_jobs
            job_docs.append({
                "uid": job_uid, "project_uid": uid, "job_type": JOB_TYPES[(index - 1) % len(JOB_TYPES)],
                "status": "running" if busy else "completed", "parents": parents, "children": children,
                "workspace_uids": ["W1"], "params_spec": {"random_seed": {"value": rng.randrange(1 << 30)}},
                "created_at": created + timedelta(hours=index)})
            _write(project_dir / job_uid / f"{job_uid}_output.cs", 512 + rng.randrange(512), rng)
            (project_dir / job_uid / "events.bson").write_bytes(b"")
            generated.jobs.append(job_uid)
        db[PROJECTS].insert_one(dict(project))
        db[WORKSPACES].insert_many([dict(item) for item in workspaces])
        if job_docs:
            db[JOBS].insert_many([dict(job) for job in job_docs])
        model.write_records(project_dir, Records(project, workspaces, job_docs))
        model.write_lock(project_dir, instance_id)
        made.append(generated)
    return made
