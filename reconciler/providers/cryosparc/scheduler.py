"""CryoSPARC scheduler lanes and targets, as the instance's database holds them.

What this relies on (the CryoSPARC guide's pages on `cryosparcw connect` and `cryosparcm
cluster connect`, and the target dicts `cryosparcm cli "get_scheduler_targets()"` prints):

- a *lane* is ``{name, title, desc, type}`` with ``type`` "node" or "cluster";
- a *node target* is what ``cryosparcw connect --worker <hostname> --ssdpath <path>
  --lane <lane> --sshstr <user@host>`` registers: ``type`` "node", ``name`` and
  ``hostname`` (the worker's hostname), ``lane``, ``title`` ("Worker node <hostname>"),
  ``ssh_str``, ``worker_bin_path`` (``<worker>/bin/cryosparcw``), ``cache_path``,
  ``cache_quota_mb``, ``cache_reserve_mb`` (10000 by default), ``resource_fixed``
  ``{"SSD": bool}``, and ``resource_slots``/``gpus`` that `cryosparcw connect` detects on
  the worker (reconciler keeps whatever is there; a target it creates starts with none,
  until ``cryosparcw connect --update`` runs on the worker);
- a *cluster target* is what ``cryosparcm cluster connect`` makes from
  ``cluster_info.json`` (``name``, ``worker_bin_path``, ``cache_path``, ``send_cmd_tpl``,
  ``qsub_cmd_tpl``, ``qstat_cmd_tpl``, ``qdel_cmd_tpl``, ``qinfo_cmd_tpl``, optional
  ``title``, ``cache_quota_mb``, ``cache_reserve_mb``) plus the submission script
  (``script_tpl``): ``type`` "cluster", ``lane`` and ``hostname`` equal to ``name``.

Storage: the ``sched_config`` collection holds one document ``{_id: "lanes", lanes: [...]}``
and one ``{_id: "targets", targets: [...]}`` (the shape the project's generator and tests
use for a CryoSPARC-like instance). Every write below is one atomic MongoDB update, so a run
killed between two of them leaves a state the next run observes and completes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconciler.providers.cryosparc.model import SCHED_CONFIG

LANES_ID, TARGETS_ID = "lanes", "targets"
DEFAULT_CACHE_RESERVE_MB = 10000
CLUSTER_REQUIRED = ("name", "worker_bin_path", "qsub_cmd_tpl", "qstat_cmd_tpl", "qdel_cmd_tpl", "qinfo_cmd_tpl")
CLUSTER_OPTIONAL = ("title", "desc", "cache_path", "cache_quota_mb", "cache_reserve_mb", "send_cmd_tpl")
# The fields of a node target reconciler manages (the rest, e.g. GPU slots, are the worker's).
NODE_MANAGED = ("type", "name", "hostname", "lane", "title", "ssh_str", "worker_bin_path", "cache_path",
                "cache_quota_mb", "resource_fixed")


class ClusterInfoError(ValueError):
    """cluster_info.json is missing, not JSON, or lacks a required key; the message names it."""


def lane_document(name: str, kind: str, title: str | None = None) -> dict[str, Any]:
    return {"name": name, "title": title or name, "desc": None, "type": kind}


def node_target(*, lane: str, hostname: str, ssh_str: str, worker_path: str, ssd_path: str | None,
                ssd_quota_mb: int | None) -> dict[str, Any]:
    """The managed fields of a node target (what `cryosparcw connect` would set)."""
    return {
        "type": "node", "name": hostname, "hostname": hostname, "lane": lane,
        "title": f"Worker node {hostname}", "ssh_str": ssh_str,
        "worker_bin_path": f"{worker_path.rstrip('/')}/bin/cryosparcw",
        "cache_path": ssd_path, "cache_quota_mb": ssd_quota_mb, "resource_fixed": {"SSD": ssd_path is not None},
    }


def read_cluster_info(path: Path) -> dict[str, Any]:
    """cluster_info.json as a dict. Raises ClusterInfoError naming the file and what is wrong."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClusterInfoError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ClusterInfoError(f"{path} cannot be read ({error})") from None
    except ValueError as error:
        raise ClusterInfoError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ClusterInfoError(f"{path} must hold a JSON object")
    missing = [key for key in CLUSTER_REQUIRED if not isinstance(value.get(key), str) or not value.get(key)]
    if missing:
        raise ClusterInfoError(f"{path} lacks {', '.join(missing)} (see `cryosparcm cluster example`)")
    return value


def cluster_target(lane: str, info: dict[str, Any], script: str) -> dict[str, Any]:
    """The target `cryosparcm cluster connect` makes from ``info`` and the script; its name is ``lane``."""
    target: dict[str, Any] = {"type": "cluster", "name": lane, "hostname": lane, "lane": lane,
                              "title": info.get("title") or lane, "script_tpl": script}
    for key in (*CLUSTER_REQUIRED, *CLUSTER_OPTIONAL):
        if key in info and key not in ("name", "title"):
            target[key] = info[key]
    return target  # only what the files say: defaults are the installation's (put_target adds them)


def render(template: str, **values: str) -> str:
    """A cluster command template (jinja2, as CryoSPARC renders them) with ``values``."""
    import jinja2

    return jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False).from_string(template).render(
        **values)


def status_command(target: dict[str, Any]) -> str:
    """The shell command that asks the cluster for its status: ``qinfo_cmd_tpl`` sent through
    ``send_cmd_tpl``. Raises jinja2 errors for a broken template."""
    return render(str(target.get("send_cmd_tpl") or "{{ command }}"), command=render(str(target["qinfo_cmd_tpl"])))


# -- reads ---------------------------------------------------------------------------------------


def lanes(db: Any) -> list[dict[str, Any]]:
    document = db[SCHED_CONFIG].find_one({"_id": LANES_ID}) or {}
    return [dict(item) for item in document.get("lanes") or [] if isinstance(item, dict) and item.get("name")]


def targets(db: Any) -> list[dict[str, Any]]:
    document = db[SCHED_CONFIG].find_one({"_id": TARGETS_ID}) or {}
    return [dict(item) for item in document.get("targets") or [] if isinstance(item, dict) and item.get("name")]


# -- writes (each one atomic update) --------------------------------------------------------------


def _put(db: Any, document_id: str, field: str, item: dict[str, Any], key: str = "name",
         merge: bool = False) -> None:
    collection = db[SCHED_CONFIG]
    collection.update_one({"_id": document_id}, {"$setOnInsert": {field: []}}, upsert=True)
    change = {f"{field}.$.{name}": value for name, value in item.items()} if merge else {f"{field}.$": item}
    found = collection.update_one({"_id": document_id, f"{field}.{key}": item[key]}, {"$set": change})
    if found.matched_count == 0:
        collection.update_one({"_id": document_id, f"{field}.{key}": {"$ne": item[key]}}, {"$push": {field: item}})


def put_lane(db: Any, lane: dict[str, Any]) -> None:
    """Create lane ``lane["name"]`` or replace its document."""
    _put(db, LANES_ID, "lanes", lane)


def put_target(db: Any, target: dict[str, Any]) -> None:
    """Create target ``target["name"]`` or set the given fields on it (others, e.g. GPU slots, kept).
    A new node target starts without resource slots (see the module docstring)."""
    existing = {item["name"] for item in targets(db)}
    if target["name"] in existing:
        _put(db, TARGETS_ID, "targets", target, merge=True)
        return
    new = dict(target)
    new.setdefault("desc", None)
    new.setdefault("cache_reserve_mb", DEFAULT_CACHE_RESERVE_MB)
    if new.get("type") == "cluster":
        new.setdefault("send_cmd_tpl", "{{ command }}")
    if new.get("type") == "node":
        new.setdefault("resource_slots", {"CPU": [], "GPU": [], "RAM": []})
        new.setdefault("gpus", [])
    _put(db, TARGETS_ID, "targets", new)


def remove_target(db: Any, name: str) -> None:
    db[SCHED_CONFIG].update_one({"_id": TARGETS_ID}, {"$pull": {"targets": {"name": name}}})


def remove_lane(db: Any, name: str) -> None:
    """Remove lane ``name`` and its targets (targets first: a lane is never left behind without
    them being gone too, and a run killed in between finds the empty lane and removes it)."""
    db[SCHED_CONFIG].update_one({"_id": TARGETS_ID}, {"$pull": {"targets": {"lane": name}}})
    db[SCHED_CONFIG].update_one({"_id": LANES_ID}, {"$pull": {"lanes": {"name": name}}})
