"""A STAND-IN for CryoSPARC's `cryosparcm`, for end-to-end tests of reconciler's cryosparcm driver.

No CryoSPARC installation exists here, so this program answers the few documented commands
the driver runs, acting on a real MongoDB server the way those commands change an instance's
database. It is written independently of reconciler's own code (pymongo and bcrypt directly),
so that a test through it checks the driver's command lines and their effect, not reconciler
against itself. It is not CryoSPARC and proves nothing about CryoSPARC's own behaviour beyond
the documented command names and flags it accepts.

Environment: CRYOSPARCM_STANDIN_URI and CRYOSPARCM_STANDIN_DB (the instance's database),
CRYOSPARCM_STANDIN_VERSION (e.g. "4.6.2" or "5.0.0"; v4 and v5 command names are accepted only
for their version), CRYOSPARCM_STANDIN_LOG (optional: each argv appended, as JSON lines).

Commands: `status`; v4 `createuser --email E --password P --username U --firstname F
--lastname L [--admin]`, v5 `user create` with the same flags; `cluster connect` (reads
cluster_info.json and cluster_script.sh from the current directory); v4 `cli
"remove_scheduler_target_node('H')"` and `cli "remove_scheduler_lane('L')"`, v5 `worker
disconnect H` and `cluster remove L`; `maintenancemode on|off|status` (v4.0+; the guide does not
say where CryoSPARC keeps the flag, so the stand-in keeps it in a file of its own,
$CRYOSPARCM_STANDIN_STATE_DIR/<database>.maintenance, default the temporary directory).
Run as a worker's `bin/cryosparcw` (CRYOSPARCW_STANDIN_SELF
set to that path): `connect --worker H --master M --port N --ssdpath D|--nossd [--ssdquota Q]
--lane L [--newlane] --sshstr S [--update]`.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path

import bcrypt
import pymongo

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz"


def database():  # type: ignore[no-untyped-def]
    client = pymongo.MongoClient(os.environ["CRYOSPARCM_STANDIN_URI"])
    return client[os.environ["CRYOSPARCM_STANDIN_DB"]]


def fail(message: str) -> None:
    print(f"ERROR: {message}")
    sys.exit(1)


def create_user(arguments: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="createuser")
    for flag in ("--email", "--password", "--username", "--firstname", "--lastname"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--admin", action="store_true")
    options = parser.parse_args(arguments)
    db = database()
    if db.users.find_one({"emails.address": {"$regex": f"^{options.email}$", "$options": "i"}}):
        fail(f"a user with email {options.email} already exists")
    digest = hashlib.sha256(options.password.encode()).hexdigest().encode()
    name = f"{options.firstname} {options.lastname}"
    db.users.insert_one({
        "_id": "".join(secrets.choice(ALPHABET) for _ in range(17)), "createdAt": datetime.now(UTC),
        "emails": [{"address": options.email, "verified": False}],
        "services": {"password": {"bcrypt": bcrypt.hashpw(digest, bcrypt.gensalt(10)).decode()}},
        "username": options.username, "name": name, "first_name": options.firstname,
        "last_name": options.lastname, "role": "admin" if options.admin else "user"})
    print(f"Successfully created user account {options.email}")


def upsert(db, document_id: str, field: str, item: dict) -> None:  # type: ignore[no-untyped-def]
    current = (db.sched_config.find_one({"_id": document_id}) or {}).get(field, [])
    current = [entry for entry in current if entry.get("name") != item["name"]] + [item]
    db.sched_config.update_one({"_id": document_id}, {"$set": {field: current}}, upsert=True)


def cluster_connect() -> None:
    info = json.loads(Path("cluster_info.json").read_text())
    script = Path("cluster_script.sh").read_text()
    db = database()
    upsert(db, "lanes", "lanes", {"name": info["name"], "title": info.get("title", info["name"]), "desc": None,
                                  "type": "cluster"})
    target = {key: value for key, value in info.items() if key not in ("title",)}
    target.update({"type": "cluster", "lane": info["name"], "hostname": info["name"],
                   "title": info.get("title", info["name"]), "script_tpl": script})
    upsert(db, "targets", "targets", target)
    print(f"Successfully added cluster lane {info['name']}")


def worker_connect(arguments: list[str]) -> None:
    """`cryosparcw connect` as run on a worker: registers (or with --update, updates) the node."""
    parser = argparse.ArgumentParser(prog="cryosparcw connect")
    for flag in ("--worker", "--master", "--port", "--lane", "--sshstr"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--ssdpath")
    parser.add_argument("--ssdquota", type=int)
    for flag in ("--nossd", "--newlane", "--update"):
        parser.add_argument(flag, action="store_true")
    options = parser.parse_args(arguments)
    if bool(options.ssdpath) == options.nossd:
        fail("give exactly one of --ssdpath and --nossd")
    db = database()
    lanes = (db.sched_config.find_one({"_id": "lanes"}) or {}).get("lanes", [])
    if options.newlane:
        upsert(db, "lanes", "lanes", {"name": options.lane, "title": options.lane, "desc": None, "type": "node"})
    elif not any(lane.get("name") == options.lane for lane in lanes):
        fail(f"lane {options.lane} does not exist; use --newlane")
    self_path = os.environ["CRYOSPARCW_STANDIN_SELF"]
    upsert(db, "targets", "targets", {
        "type": "node", "name": options.worker, "hostname": options.worker, "lane": options.lane,
        "title": f"Worker node {options.worker}", "desc": None, "ssh_str": options.sshstr,
        "worker_bin_path": os.path.abspath(self_path), "cache_path": options.ssdpath,
        "cache_quota_mb": options.ssdquota, "cache_reserve_mb": 10000,
        "resource_fixed": {"SSD": options.ssdpath is not None},
        "resource_slots": {"CPU": [0, 1], "GPU": [0], "RAM": [0, 1]}, "gpus": [{"id": 0, "name": "stand-in"}]})
    print(f"Successfully connected worker {options.worker} to master {options.master}:{options.port}")


def remove_target(name: str) -> None:
    database().sched_config.update_one({"_id": "targets"}, {"$pull": {"targets": {"name": name}}})


def remove_lane(name: str) -> None:
    db = database()
    db.sched_config.update_one({"_id": "targets"}, {"$pull": {"targets": {"lane": name}}})
    db.sched_config.update_one({"_id": "lanes"}, {"$pull": {"lanes": {"name": name}}})


def maintenance(state: str) -> None:
    import tempfile

    directory = Path(os.environ.get("CRYOSPARCM_STANDIN_STATE_DIR", tempfile.gettempdir()))
    flag = directory / f"{os.environ['CRYOSPARCM_STANDIN_DB']}.maintenance"
    if state == "on":
        flag.write_text("on\n")
        print("Turning maintenance mode ON")
    elif state == "off":
        flag.unlink(missing_ok=True)
        print("Turning maintenance mode OFF")
    elif state == "status":
        print(f"Maintenance mode is currently {'ON' if flag.exists() else 'OFF'}")
    else:
        fail(f"maintenancemode takes on, off or status, not {state}")


def main(argv: list[str]) -> None:
    log = os.environ.get("CRYOSPARCM_STANDIN_LOG")
    if log:
        with open(log, "a") as stream:
            stream.write(json.dumps({"argv": argv, "cwd_files": sorted(os.listdir("."))}) + "\n")
    version = os.environ.get("CRYOSPARCM_STANDIN_VERSION", "4.6.2")
    major = int(version.split(".")[0])
    if os.environ.get("CRYOSPARCW_STANDIN_SELF") and argv[:1] == ["connect"]:
        worker_connect(argv[1:])
    elif argv[:1] == ["status"]:
        print(f"----\nCurrent cryoSPARC version: v{version}\n----")
    elif major < 5 and argv[:1] == ["createuser"]:
        create_user(argv[1:])
    elif major >= 5 and argv[:2] == ["user", "create"]:
        create_user(argv[2:])
    elif argv[:1] == ["maintenancemode"] and len(argv) == 2:
        maintenance(argv[1])
    elif argv[:2] == ["cluster", "connect"]:
        cluster_connect()
    elif major < 5 and argv[:1] == ["cli"] and len(argv) == 2:
        call = ast.parse(argv[1], mode="eval").body
        assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
        values = [ast.literal_eval(argument) for argument in call.args]
        functions = {"remove_scheduler_target_node": remove_target, "remove_scheduler_lane": remove_lane}
        if call.func.id not in functions:
            fail(f"the stand-in does not know {call.func.id}")
        functions[call.func.id](*values)
    elif major >= 5 and argv[:2] == ["worker", "disconnect"]:
        remove_target(argv[2])
    elif major >= 5 and argv[:2] == ["cluster", "remove"]:
        remove_lane(argv[2])
    else:
        fail(f"unknown command for CryoSPARC v{version}: {' '.join(argv)}")


if __name__ == "__main__":
    main(sys.argv[1:])
