"""Instances as code end to end: login users and scheduler lanes on CryoSPARC-shaped
instances in a real MongoDB server (a single-node replica set, as CryoSPARC's meteor
database runs), node targets checked over a real sshd on 127.0.0.1, the real CLI."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.kinds.projects.generator import make_instance
from reconciler.providers.cryosparc import accounts, scheduler
from tests.conftest import run_cli
from tests.integration.conftest import make_worker

PASSWORD = "correct horse battery staple 42"


@dataclass
class Instance:
    site: Any
    mongo: Any
    client: Any
    database: str
    root: Path

    @property
    def db(self) -> Any:
        return self.client[self.database]

    def configure(self, body: str, extra: str = "") -> None:
        self.site.write(f'[databases.cs]\nuri = "{self.mongo.uri}"\ndatabase = "{self.database}"\n\n'
                        '[instances.new]\ndatabase = "cs"\ninstance_id = "id-new"\n' + extra + "\n" + body)

    def users(self) -> dict[str, dict[str, Any]]:
        return {accounts.emails_of(user)[0]: user for user in self.db.users.find({})}


@pytest.fixture
def instance(site, mongo_rs, tmp_path) -> Any:
    import pymongo

    client: Any = pymongo.MongoClient(mongo_rs.uri)
    database = f"csnew_{uuid.uuid4().hex[:8]}"
    make_instance(client[database], tmp_path / "projects", "id-new", projects=2, jobs=2)
    yield Instance(site, mongo_rs, client, database, tmp_path)
    client.drop_database(database)
    client.close()


def _env(**values: str) -> dict[str, str]:
    return {key: value for key, value in values.items()}


@pytest.mark.state_store
def test_users_are_created_with_a_meteor_password_and_the_password_is_never_shown(instance, monkeypatch):
    monkeypatch.setenv("ALICE_PW", PASSWORD)
    instance.configure('[users."Dora@Example.org"]\nname = "Dora Hodgkin"\nusername = "dora"\nrole = "admin"\n'
                       'initial_password_env = "ALICE_PW"\n')
    plan = instance.site.cli("plan", "--format", "json")
    assert plan.code == 0, plan.err
    actions = json.loads(plan.out)["actions"]
    assert [(action["kind"], action["address"]) for action in actions] == [
        ("create_user", "user:new/Dora@Example.org")]
    assert PASSWORD not in plan.out and PASSWORD not in plan.err

    applied = run_cli(instance.site.args("apply", "--auto-approve"), env={"ALICE_PW": PASSWORD})
    assert applied.code == 0, applied.err
    assert PASSWORD not in applied.out + applied.err
    user = instance.users()["dora@example.org"]
    assert user["emails"] == [{"address": "Dora@Example.org", "verified": False}]
    assert user["username"] == "dora" and user["role"] == "admin"
    assert (user["first_name"], user["last_name"], user["name"]) == ("Dora", "Hodgkin", "Dora Hodgkin")
    stored = user["services"]["password"]["bcrypt"]
    assert stored.startswith("$2b$10$") and PASSWORD not in json.dumps(user, default=str)
    assert accounts.meteor_password_matches(PASSWORD, stored)
    assert not accounts.meteor_password_matches(PASSWORD + "x", stored)

    history = instance.site.cli("history")
    assert history.code == 0 and "create_user" in history.out and PASSWORD not in history.out + history.err
    if instance.site.state_url.startswith("sqlite:///"):
        assert PASSWORD.encode() not in Path(instance.site.state_url[len("sqlite:///"):]).read_bytes()

    again = instance.site.cli("plan", "--detailed-exitcode")
    assert again.code == 0, again.out + again.err  # converged: the email matched whatever its case

    listed = instance.site.cli("users", "list", "--json")
    assert listed.code == 0, listed.err
    rows = {row["email"]: row for row in json.loads(listed.out)}
    assert rows["dora@example.org"]["status"] == "ok" and rows["dora@example.org"]["role"] == "admin"
    assert PASSWORD not in listed.out and "bcrypt" not in listed.out


def test_name_and_role_are_reconciled_on_an_existing_user(instance):
    existing = next(iter(instance.users()))
    instance.configure(f'[users."{existing.upper()}"]\nname = "Rosalind Franklin"\nrole = "admin"\n')
    plan = instance.site.cli("plan", "--format", "json")
    assert [action["kind"] for action in json.loads(plan.out)["actions"]] == ["update_user"], plan.out + plan.err
    assert instance.site.cli("apply", "--auto-approve").code == 0
    user = instance.users()[existing]
    assert (user["name"], user["role"], user["first_name"]) == ("Rosalind Franklin", "admin", "Rosalind")
    assert instance.site.cli("plan", "--detailed-exitcode").code == 0


def test_a_missing_user_without_a_password_variable_is_an_error_naming_the_key(instance, monkeypatch):
    monkeypatch.delenv("ERIN_PW", raising=False)
    instance.configure('[users."erin@example.org"]\ninitial_password_env = "ERIN_PW"\n')
    plan = instance.site.cli("plan")
    assert plan.code == 1 and "ERIN_PW" in plan.out + plan.err and "not set" in plan.out + plan.err


def test_removal_needs_absent_and_allow_destroy_and_never_touches_an_owner(instance):
    users = instance.users()
    owners = {user["_id"] for user in instance.db.projects.find({}, {"owner_user_id": 1})
              for user in [{"_id": user["owner_user_id"]}]}
    owner = next(email for email, user in users.items() if user["_id"] in owners)
    instance.db.users.insert_one({"_id": "idle-user", "emails": [{"address": "idle@example.org"}], "name": "Idle"})
    instance.configure(f'[users."{owner}"]\nabsent = true\n\n[users."IDLE@example.org"]\nabsent = true\n')
    plan = instance.site.cli("plan")
    assert plan.code == 1
    owned = sorted(doc["uid"] for doc in instance.db.projects.find({"owner_user_id": users[owner]["_id"]}))
    assert f"refusing to remove {owner}" in plan.out + plan.err and ", ".join(owned) in plan.out + plan.err

    instance.configure('[users."IDLE@example.org"]\nabsent = true\n')
    kept = instance.site.cli("apply", "--auto-approve")
    assert instance.db.users.find_one({"_id": "idle-user"}) is not None, kept.out + kept.err
    removed = instance.site.cli("apply", "--auto-approve", "--allow-destroy")
    assert removed.code == 0, removed.err
    assert instance.db.users.find_one({"_id": "idle-user"}) is None
    assert instance.db.users.count_documents({}) == len(users)


def test_node_lane_is_created_when_its_target_answers_over_ssh_and_pruned_only_with_allow_destroy(instance, sshd):
    worker = make_worker(instance.root)
    target = f'{{ hostname = "gpu1", ssh = "{sshd.user}@127.0.0.1", worker_path = "{worker}", ssd_path = "/scratch" }}'
    instance.configure(f'{sshd.toml(port_option=True)}\n[lanes.workstations]\ntype = "node"\n'
                       f'targets = [{target}]\n')
    plan = instance.site.cli("plan", "--format", "json")
    assert plan.code == 0, plan.out + plan.err
    body = json.loads(plan.out)
    assert [action["kind"] for action in body["actions"]] == ["put_lane", "put_target"]
    # the generated instance's "default" lane has no target: kept, with a warning naming it
    assert any("default" in warning["address"] for warning in body["warnings"])
    assert instance.site.cli("apply", "--auto-approve").code == 0
    lanes = {lane["name"]: lane for lane in scheduler.lanes(instance.db)}
    assert lanes["workstations"] == {"name": "workstations", "title": "workstations", "desc": None, "type": "node"}
    [stored] = scheduler.targets(instance.db)
    assert stored["worker_bin_path"] == f"{worker}/bin/cryosparcw" and stored["ssh_str"] == f"{sshd.user}@127.0.0.1"
    assert stored["lane"] == "workstations" and stored["cache_path"] == "/scratch"
    assert stored["resource_fixed"] == {"SSD": True} and stored["resource_slots"] == {"CPU": [], "GPU": [], "RAM": []}

    # a target the config does not name: kept (a note) unless prune = true, then only with --allow-destroy
    scheduler.put_target(instance.db, scheduler.node_target(lane="workstations", hostname="old-gpu",
                                                             ssh_str="nobody@old-gpu", worker_path="/x",
                                                             ssd_path=None, ssd_quota_mb=None))
    kept = json.loads(instance.site.cli("plan", "--format", "json").out)
    assert kept["actions"] == [] and any("old-gpu" in note["message"] for note in kept["notes"])
    instance.configure(f'{sshd.toml(port_option=True)}\n[lanes.workstations]\ntype = "node"\nprune = true\n'
                       f'targets = [{target}]\n', extra="prune_lanes = true\n")
    pending = instance.site.cli("reconcile")
    assert pending.code == 2, pending.out + pending.err
    assert {item["name"] for item in scheduler.targets(instance.db)} == {"gpu1", "old-gpu"}
    done = instance.site.cli("reconcile", "--allow-destroy")
    assert done.code == 0, done.out + done.err
    assert {item["name"] for item in scheduler.targets(instance.db)} == {"gpu1"}
    assert [lane["name"] for lane in scheduler.lanes(instance.db)] == ["workstations"]


def test_a_lane_whose_only_target_does_not_answer_is_refused_naming_it(instance, sshd):
    worker = make_worker(instance.root)
    missing = instance.root / "no-worker-here"
    instance.configure(
        f'{sshd.toml(port_option=True)}\n[lanes.ws]\ntype = "node"\ntargets = ['
        f'{{ hostname = "gpu2", ssh = "{sshd.user}@127.0.0.1", worker_path = "{missing}" }}]\n')
    plan = instance.site.cli("plan")
    text = plan.out + plan.err
    assert plan.code == 1 and "refusing to leave lane ws" in text and "gpu2" in text, text
    assert f"{missing}/bin/cryosparcw is missing" in text
    assert scheduler.lanes(instance.db) == [{"name": "default", "type": "node"}]
    # a closed port: ssh itself fails (BatchMode, ConnectTimeout), the error says so
    closed = sshd.toml(port_option=True).replace(f"Port={sshd.port}", "Port=1")
    instance.configure(f'{closed}\n[lanes.ws]\ntype = "node"\ntargets = ['
                       f'{{ hostname = "gpu2", ssh = "{sshd.user}@127.0.0.1", worker_path = "{worker}" }}]\n')
    plan = instance.site.cli("plan")
    assert plan.code == 1 and "ssh " in plan.out + plan.err and "failed" in plan.out + plan.err


def test_cluster_lane_from_cluster_info_whose_status_command_runs(instance):
    instance.db.sched_config.delete_many({})  # no generated "default" lane: this instance has only "hpc"
    lanes_dir = instance.site.root / "lanes"
    lanes_dir.mkdir()
    info = {"name": "ignored", "worker_bin_path": "/opt/cryosparc_worker/bin/cryosparcw",
            "cache_path": "/scratch", "send_cmd_tpl": "{{ command }}", "qsub_cmd_tpl": "sbatch {{ script_path_abs }}",
            "qstat_cmd_tpl": "squeue -j {{ cluster_job_id }}", "qdel_cmd_tpl": "scancel {{ cluster_job_id }}",
            "qinfo_cmd_tpl": "echo cluster-ok"}
    (lanes_dir / "cluster_info.json").write_text(json.dumps(info))
    (lanes_dir / "cluster_script.sh").write_text("#!/bin/bash\n#SBATCH --job-name cryosparc_{{ project_uid }}\n")
    instance.configure('[lanes.hpc]\ntype = "cluster"\ncluster_info = "lanes/cluster_info.json"\n'
                       'cluster_script = "lanes/cluster_script.sh"\n')
    applied = instance.site.cli("apply", "--auto-approve")
    assert applied.code == 0, applied.out + applied.err
    [target] = [item for item in scheduler.targets(instance.db) if item["lane"] == "hpc"]
    assert target["type"] == "cluster" and target["name"] == "hpc" and target["qinfo_cmd_tpl"] == "echo cluster-ok"
    assert target["script_tpl"].startswith("#!/bin/bash")
    assert instance.site.cli("plan", "--detailed-exitcode").code == 0

    info["qinfo_cmd_tpl"] = "exit 3"
    (lanes_dir / "cluster_info.json").write_text(json.dumps(info))
    plan = instance.site.cli("plan")
    assert plan.code == 1 and "status command `exit 3` failed" in plan.out + plan.err
    (lanes_dir / "cluster_info.json").write_text("{not json")
    plan = instance.site.cli("plan")
    assert plan.code == 1 and "cluster_info.json is not valid JSON" in plan.out + plan.err


def test_users_and_lanes_come_before_the_projects_attached_to_their_instance(instance, tmp_path, monkeypatch):
    monkeypatch.setenv("NEW_PW", PASSWORD)
    project = next(instance.db.projects.find({}))
    target_path = tmp_path / "moved"
    instance.configure(f'[users."carol@example.org"]\ninitial_password_env = "NEW_PW"\n\n'
                       f'[projects.p]\nuid = "{project["uid"]}"\ninstance = "new"\npath = "{target_path}"\n')
    plan = json.loads(instance.site.cli("plan", "--format", "json").out)
    kinds = [action["kind"] for action in plan["actions"]]
    assert kinds[0] == "create_user" and "archive" in kinds
    create = plan["actions"][0]["id"]
    assert all(create in action["depends_on"] for action in plan["actions"][1:] if action["address"] == "project:p"
               and action["kind"] == "archive")
    assert os.environ["NEW_PW"] not in json.dumps(plan)


@pytest.mark.parametrize("version", ["4.6.2", "5.0.0"])
def test_the_cryosparcm_driver_runs_the_installations_own_commands(instance, monkeypatch, tmp_path, version):
    """Through the stand-in (tests/integration/cryosparcm_standin.py: no CryoSPARC runs here)."""
    import sys

    program = tmp_path / "cryosparcm"
    program.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).parent / 'cryosparcm_standin.py'} "
                       '"$@"\n')
    program.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("CRYOSPARCM_STANDIN_URI", instance.mongo.uri)
    monkeypatch.setenv("CRYOSPARCM_STANDIN_DB", instance.database)
    monkeypatch.setenv("CRYOSPARCM_STANDIN_VERSION", version)
    monkeypatch.setenv("CRYOSPARCM_STANDIN_LOG", str(log))
    monkeypatch.setenv("HEDY_PW", PASSWORD)
    scheduler.put_target(instance.db, scheduler.node_target(lane="default", hostname="retired", ssh_str="u@retired",
                                                             worker_path="/w", ssd_path=None, ssd_quota_mb=None))
    lanes_dir = instance.site.root / "lanes"
    lanes_dir.mkdir()
    (lanes_dir / "cluster_info.json").write_text(json.dumps({
        "name": "x", "worker_bin_path": "/w/bin/cryosparcw", "send_cmd_tpl": "{{ command }}",
        "qsub_cmd_tpl": "sbatch {{ script_path_abs }}", "qstat_cmd_tpl": "squeue", "qdel_cmd_tpl": "scancel",
        "qinfo_cmd_tpl": "true"}))
    (lanes_dir / "cluster_script.sh").write_text("#!/bin/bash\n")
    instance.configure('[users."hedy@example.org"]\nname = "Hedy Lamarr"\nrole = "admin"\n'
                       'initial_password_env = "HEDY_PW"\n\n[lanes.hpc]\ntype = "cluster"\n'
                       'cluster_info = "lanes/cluster_info.json"\ncluster_script = "lanes/cluster_script.sh"\n',
                       extra=f'driver = "cryosparcm"\ncryosparcm = "{program}"\nprune_lanes = true\n')
    applied = instance.site.cli("apply", "--auto-approve", "--allow-destroy")
    assert applied.code == 0, applied.out + applied.err
    assert PASSWORD not in applied.out + applied.err
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    commands = [" ".join(call["argv"][:2]) for call in calls]
    # No createuser: it would put the password in the process table (the login is written to the database).
    assert not any(PASSWORD in " ".join(call["argv"]) for call in calls)
    assert not any(command.startswith(("createuser", "user create")) for command in commands), commands
    assert "cluster connect" in commands, commands
    assert (["cli", "remove_scheduler_lane('default')"] if version.startswith("4") else
            ["cluster", "remove", "default"]) in [call["argv"] for call in calls]
    connect = next(call for call in calls if call["argv"][:2] == ["cluster", "connect"])
    assert connect["cwd_files"] == ["cluster_info.json", "cluster_script.sh"]
    user = instance.users()["hedy@example.org"]
    assert user["role"] == "admin"
    assert accounts.meteor_password_matches(PASSWORD, user["services"]["password"]["bcrypt"])
    assert [lane["name"] for lane in scheduler.lanes(instance.db)] == ["hpc"]
    assert [target["name"] for target in scheduler.targets(instance.db)] == ["hpc"]
    assert instance.site.cli("plan", "--detailed-exitcode").code == 0


def test_cryosparcm_driver_connects_a_node_with_cryosparcw_connect_over_ssh(instance, sshd, monkeypatch, tmp_path):
    """v4: `cryosparcw connect` runs on the worker over the real sshd; the worker's bin/cryosparcw is
    the stand-in (tests/integration/cryosparcm_standin.py: no CryoSPARC runs here)."""
    import shlex
    import sys

    standin = Path(__file__).parent / "cryosparcm_standin.py"
    log = tmp_path / "calls.jsonl"
    env = {"CRYOSPARCM_STANDIN_URI": instance.mongo.uri, "CRYOSPARCM_STANDIN_DB": instance.database,
           "CRYOSPARCM_STANDIN_VERSION": "4.6.2", "CRYOSPARCM_STANDIN_LOG": str(log)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    program = tmp_path / "cryosparcm"
    program.write_text(f'#!/bin/sh\nexec {sys.executable} {standin} "$@"\n')
    program.chmod(0o755)
    worker = tmp_path / "cryosparc_worker"
    (worker / "bin").mkdir(parents=True)
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
    (worker / "bin" / "cryosparcw").write_text(
        f'#!/bin/sh\n{exports} CRYOSPARCW_STANDIN_SELF="$0" exec {sys.executable} {standin} "$@"\n')
    (worker / "bin" / "cryosparcw").chmod(0o755)
    target = f'{{ hostname = "gpu1", ssh = "{sshd.user}@127.0.0.1", worker_path = "{worker}" }}'
    instance.configure(f'{sshd.toml(port_option=True)}\n[lanes.ws]\ntype = "node"\ntargets = [{target}]\n',
                       extra=f'driver = "cryosparcm"\ncryosparcm = "{program}"\nmaster_hostname = "csmaster"\n')
    applied = instance.site.cli("apply", "--auto-approve")
    assert applied.code == 0, applied.out + applied.err
    calls = [json.loads(line)["argv"] for line in log.read_text().splitlines()]
    assert ["connect", "--worker", "gpu1", "--master", "csmaster", "--port", "39000", "--nossd", "--lane", "ws",
            "--newlane", "--sshstr", f"{sshd.user}@127.0.0.1"] in calls, calls
    [stored] = [item for item in scheduler.targets(instance.db) if item["lane"] == "ws"]
    assert stored["worker_bin_path"] == f"{worker}/bin/cryosparcw" and stored["gpus"], "slots the worker detected"
    assert [lane for lane in scheduler.lanes(instance.db) if lane["name"] == "ws"] == [
        {"name": "ws", "title": "ws", "desc": None, "type": "node"}]
    again = json.loads(instance.site.cli("plan", "--format", "json").out)
    assert again["actions"] == [], again["actions"]
