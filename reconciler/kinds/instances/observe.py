"""Reading instances for the instances kind: users, lanes and targets from each instance's
database, and whether each target is functional (a node answers over ssh and has its worker;
a cluster's cluster_info.json parses and its status command runs). Every read is here."""

from __future__ import annotations

import os
import shlex
import subprocess
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from reconciler.engine.actions import AddressMessage
from reconciler.engine.kind import Observation, RunContext
from reconciler.errors import ObserveError
from reconciler.kinds.instances.config import LaneConfig, UserConfig, applies_to, normalise_email
from reconciler.kinds.instances.diff import InstanceFacts, LaneFacts, TargetFacts, UserFacts
from reconciler.providers.cryosparc import accounts, scheduler
from reconciler.providers.cryosparc.readers import Readers
from reconciler.providers.location import SshSettings

STATUS_TIMEOUT = 60  # seconds a cluster's status command may take


def ssh_settings(desired: Any) -> SshSettings:
    """The ``[ssh]`` section's settings when the config has one (another kind declares it), else defaults."""
    section = getattr(desired, "ssh", None)
    return section.settings() if section is not None and hasattr(section, "settings") else SshSettings()


def node_problem(ssh: SshSettings, ssh_str: str, worker_bin_path: str) -> str | None:
    """Why the node target reached by ``ssh_str`` is not functional, or None when ssh answers
    (BatchMode, ConnectTimeout) and ``worker_bin_path`` is executable there."""
    argv = ["ssh", *ssh.base_args(), "--", ssh_str, f"test -x {shlex.quote(worker_bin_path)}"]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=ssh.connect_timeout + 30, check=False)
    except FileNotFoundError:
        return "ssh is not installed here"
    except subprocess.TimeoutExpired:
        return f"ssh {ssh_str} did not answer within {ssh.connect_timeout + 30}s"
    if done.returncode == 255:
        lines = done.stderr.strip().splitlines()
        return f"ssh {ssh_str} failed ({lines[-1] if lines else 'exit 255'})"
    if done.returncode != 0:
        return f"{worker_bin_path} is missing or not executable on {ssh_str}"
    return None


def cluster_problem(target: dict[str, Any]) -> str | None:
    """Why the cluster target is not functional (its status command, qinfo_cmd_tpl through
    send_cmd_tpl, fails), or None when that command exits 0."""
    try:
        command = scheduler.status_command(target)
    except Exception as error:  # jinja2 raises many kinds for a broken template
        return f"its status command template does not render ({error})"
    try:
        done = subprocess.run(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=STATUS_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return f"its status command `{command}` did not finish within {STATUS_TIMEOUT}s"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"its status command `{command}` failed (exit {done.returncode}: {lines[-1] if lines else ''})"
    return None


def _user_facts(instance: str, email: str, user: UserConfig, db: Any, source_db: Any = None) -> UserFacts:
    first, last = user.first_last()
    facts = UserFacts(instance=instance, email=email, absent=user.absent,
                      username=user.username or email.split("@", 1)[0], first_name=first, last_name=last,
                      name_declared=user.name is not None, role=user.role, password_env=user.initial_password_env,
                      password_set=bool(user.initial_password_env and os.environ.get(user.initial_password_env)))
    found = accounts.find_user(db, email)
    if found is None and source_db is not None and not user.absent:
        found = accounts.find_user(source_db, email)  # carried over by the migration (merge_user) first
        facts.from_source = found is not None
    if found is not None:
        facts.user_id = str(found["_id"])
        facts.actual = {"name": str(found.get("name") or ""), "first_name": str(found.get("first_name") or ""),
                        "last_name": str(found.get("last_name") or ""), "role": accounts.role_of(found)}
        facts.owned = accounts.owned_projects(db, found["_id"])
    return facts


def _declared_targets(name: str, lane: LaneConfig) -> tuple[list[dict[str, Any]], str | None]:
    if lane.type == "node":
        return [scheduler.node_target(lane=name, hostname=target.hostname, ssh_str=target.ssh,
                                      worker_path=target.worker_path, ssd_path=target.ssd_path,
                                      ssd_quota_mb=target.ssd_quota_mb) for target in lane.targets], None
    try:
        info = scheduler.read_cluster_info(Path(str(lane.cluster_info)))
        script = Path(str(lane.cluster_script)).read_text(encoding="utf-8")
    except scheduler.ClusterInfoError as error:
        return [], f"[lanes.{name}] cluster_info: {error}"
    except OSError as error:
        return [], f"[lanes.{name}] cluster_script {lane.cluster_script} cannot be read ({error.strerror})"
    return [scheduler.cluster_target(name, info, script)], None


def _problem(ssh: SshSettings, target: dict[str, Any], cache: dict[str, str | None]) -> str | None:
    key = repr(sorted((k, str(v)) for k, v in target.items() if k in ("type", "ssh_str", "worker_bin_path",
                                                                       "send_cmd_tpl", "qinfo_cmd_tpl")))
    if key not in cache:
        if target.get("type") == "cluster":
            cache[key] = cluster_problem(target) if target.get("qinfo_cmd_tpl") else "it has no qinfo_cmd_tpl"
        elif target.get("ssh_str") and target.get("worker_bin_path"):
            cache[key] = node_problem(ssh, str(target["ssh_str"]), str(target["worker_bin_path"]))
        else:
            cache[key] = "it has no ssh_str or worker_bin_path"
    return cache[key]


def _lane_facts(desired: Any, instance: str, db: Any, ssh: SshSettings,
                cache: dict[str, str | None]) -> list[LaneFacts]:
    actual_lanes = {lane["name"]: lane for lane in scheduler.lanes(db)}
    actual_targets = scheduler.targets(db)
    declared = {name: lane for name, lane in desired.lanes.items() if applies_to(lane.instances, instance)}
    prune_lanes = bool(desired.instances[instance].prune_lanes)
    found: list[LaneFacts] = []
    for name in [*declared, *(name for name in actual_lanes if name not in declared)]:
        lane = declared.get(name)
        here = [target for target in actual_targets if target.get("lane") == name]
        facts = LaneFacts(instance=instance, name=name, actual=_plain(actual_lanes.get(name)),
                          declared=scheduler.lane_document(name, lane.type, lane.title) if lane else None,
                          prune_targets=bool(lane and lane.prune), prune_lane=lane is None and prune_lanes)
        wanted: list[dict[str, Any]] = []
        if lane is not None:
            wanted, facts.config_problem = _declared_targets(name, lane)
        by_name = {target["name"]: target for target in here}
        for target in wanted:
            actual = by_name.get(target["name"])
            managed = {key: actual.get(key) for key in target} if actual is not None else None
            facts.targets.append(TargetFacts(name=target["name"], declared=target, actual=managed,
                                             problem=_problem(ssh, target, cache)))
        for target in here:
            if not any(item["name"] == target["name"] for item in wanted):
                facts.targets.append(TargetFacts(name=str(target["name"]), declared=None, actual=_plain(target),
                                                 problem=None if facts.prune_lane else _problem(ssh, target, cache)))
        found.append(facts)
    return found


def _plain(document: dict[str, Any] | None) -> dict[str, Any] | None:
    if document is None:
        return None
    return {key: value for key, value in document.items() if key not in ("resource_slots", "gpus", "_id")}


def _copied(ctx: RunContext, instance: str, config: Any) -> bool:
    """True when a database migration to ``instance`` has copied the source's database."""
    from reconciler.kinds.instances.tables import CopiedDatabase

    with ctx.state.session() as session:
        row = session.get(CopiedDatabase, (instance, str(config.migrate_from)))
    return row is not None and row.copied_at is not None


def involved_instances(desired: Any) -> list[str]:
    """The instances some [users.*] or [lanes.*] entry applies to, or that prune lanes."""
    names = []
    for instance, config in desired.instances.items():
        if config.prune_lanes or config.migrate_from or any(applies_to(item.instances, instance)
                                     for item in [*desired.users.values(), *desired.lanes.values()]):
            names.append(instance)
    return names


def observe_instances(desired: Any, ctx: RunContext) -> Observation:
    facts: list[InstanceFacts] = []
    errors: list[AddressMessage] = []
    ssh = ssh_settings(desired)
    cache: dict[str, str | None] = {}
    with ExitStack() as stack:
        readers = Readers(desired, stack)
        for instance in involved_instances(desired):
            try:
                db = readers.get(instance).db
                item = InstanceFacts(instance=instance)
                config = desired.instances[instance]
                users_db = db
                if config.migrate_from and config.migration == "database" and not _copied(ctx, instance, config):
                    users_db = readers.get(config.migrate_from).db  # the users the target will hold after the copy
                source_db = None
                if config.migrate_from and config.migration == "attach":
                    source_db = readers.get(config.migrate_from).db
                for email, user in desired.users.items():
                    if applies_to(user.instances, instance):
                        item.users.append(_user_facts(instance, email, user, users_db, source_db))
                if desired.instances[instance].prune_lanes or any(applies_to(lane.instances, instance)
                                                                  for lane in desired.lanes.values()):
                    item.lanes = _lane_facts(desired, instance, db, ssh, cache)  # lanes managed here
            except ObserveError as error:
                errors.append(AddressMessage(address=f"instance:{instance}", message=str(error)))
                continue
            except Exception as error:  # pymongo's errors: the instance's database did not answer
                errors.append(AddressMessage(address=f"instance:{instance}",
                                             message=f"reading {instance} failed: {str(error).splitlines()[0]}"))
                continue
            if desired.instances[instance].migrate_from:
                from reconciler.kinds.instances.database_migration import observe_database_migration
                from reconciler.kinds.instances.diff import lane_address, user_address
                from reconciler.kinds.instances.migration import observe_migration

                prerequisites = [user_address(instance, user.email) for user in item.users] + [
                    lane_address(instance, lane.name) for lane in item.lanes]
                try:
                    if desired.instances[instance].migration == "database":
                        item.database_migration = observe_database_migration(desired, instance, readers, ctx)
                    else:
                        item.migration = observe_migration(desired, instance, readers, ctx, prerequisites)
                except ObserveError as error:
                    errors.append(AddressMessage(address=f"instance:{instance}", message=str(error)))
                    continue
            item.project_addresses = [f"project:{name}" for name, project in
                                      (getattr(desired, "projects", {}) or {}).items()
                                      if instance in (project.instance, getattr(project, "from_", None))]
            facts.append(item)
    return Observation(facts=facts, errors=errors)


def user_rows(desired: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Every user of every instance with what the config declares for it (``users list``)."""
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    declared = {normalise_email(email): (email, user) for email, user in desired.users.items()}
    with ExitStack() as stack:
        readers = Readers(desired, stack)
        for instance in desired.instances:
            try:
                db = readers.get(instance).db
                users = accounts.list_users(db)
            except ObserveError as error:
                problems.append(str(error))
                continue
            seen: set[str] = set()
            for document in users:
                emails = accounts.emails_of(document)
                email = emails[0] if emails else ""
                seen.update(emails)
                entry = next((declared[item] for item in emails if item in declared), None)
                want = entry[1] if entry and applies_to(entry[1].instances, instance) else None
                status = "undeclared" if want is None else ("to remove" if want.absent else (
                    "ok" if want.role in (None, accounts.role_of(document)) and (
                        want.name is None or want.name == document.get("name")) else "differs"))
                rows.append({"instance": instance, "email": email, "id": str(document["_id"]),
                             "username": document.get("username"), "name": document.get("name"),
                             "role": accounts.role_of(document), "declared": entry[0] if want and entry else None,
                             "status": status, "owns": accounts.owned_projects(db, document["_id"])})
            for normal, (email, user) in declared.items():
                if normal not in seen and applies_to(user.instances, instance) and not user.absent:
                    rows.append({"instance": instance, "email": email, "id": None, "username": user.username,
                                 "name": user.name, "role": user.role or "user", "declared": email,
                                 "status": "missing",
                                 "owns": []})
    return rows, problems
