"""The instances resource kind: what a CryoSPARC instance's database holds besides projects,
as code: login users (``[users."<email>"]``) and scheduler lanes and targets
(``[lanes.<name>]``). observe.py reads, diff.py plans, the executors below write through the
instance's driver (``mongo``: the database directly; ``cryosparcm``: the installation's own
commands where they exist, see providers/cryosparc/drivers/cryosparcm.py)."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from reconciler.engine.actions import Action
from reconciler.engine.kind import ConfigPath, Diff, Kind, Observation, RunContext, executor
from reconciler.engine.memo import Memo
from reconciler.errors import ApplyError
from reconciler.kinds.instances.config import LaneConfig, UserConfig, check_instances_kind
from reconciler.kinds.instances.database_migration import (
    CopyDatabaseDetails,
    MigrateCopyDetails,
    MovedProjectDetails,
    ProjectStepDetails,
)
from reconciler.kinds.instances.diff import (
    CreateUserDetails,
    LaneDetails,
    PutLaneDetails,
    PutTargetDetails,
    RemoveUserDetails,
    TargetDetails,
    UpdateUserDetails,
    diff_instance,
    lane_address,
    user_address,
)
from reconciler.kinds.instances.migration import AttachMigrationDetails, MergeLaneDetails, MergeUserDetails
from reconciler.kinds.instances.observe import involved_instances, observe_instances
from reconciler.kinds.instances.tables import CopiedDatabase, MigratedProject
from reconciler.providers.cryosparc import accounts, integrity, model, scheduler
from reconciler.providers.cryosparc.config import INSTANCES_SECTION
from reconciler.providers.cryosparc.copy import copy_project
from reconciler.providers.cryosparc.drivers import cryosparcm, open_driver, open_reader
from reconciler.providers.cryosparc.readers import find_imported
from reconciler.providers.mongo.config import DATABASES_SECTION
from reconciler.secrets import remember_secret
from reconciler.units import human_bytes


def _now() -> datetime:
    return datetime.now(UTC)


class InstancesKind(Kind):
    name = "instances"
    address_prefix = "instance"
    other_address_prefixes = ("user", "lane", "migration")
    sections = {
        **DATABASES_SECTION,
        **INSTANCES_SECTION,
        "users": (dict[str, UserConfig],
                  Field(default_factory=dict, description='CryoSPARC login users, keyed by email: '
                                                          '[users."alice@example.org"].')),
        "lanes": (dict[str, LaneConfig],
                  Field(default_factory=dict, description="CryoSPARC scheduler lanes and their targets.")),
    }

    tables = [MigratedProject, CopiedDatabase]

    def addresses(self, desired: Any) -> list[str]:
        found = []
        for instance in desired.instances:
            found += [user_address(instance, email) for email, user in desired.users.items()
                      if user.instances is None or instance in user.instances]
            found += [lane_address(instance, name) for name, lane in desired.lanes.items()
                      if lane.instances is None or instance in lane.instances]
        return found

    def check(self, desired: Any, base_dir: Path) -> list[tuple[ConfigPath, str]]:
        return check_instances_kind(desired)

    def observe(self, desired: Any, ctx: RunContext) -> Observation:
        if not involved_instances(desired):
            return Observation(facts=[], memo=Memo())  # nothing declared: nothing a no-change memo need check
        return observe_instances(desired, ctx)

    def diff(self, desired: Any, observation: Observation) -> Diff:
        combined = Diff()
        for facts in observation.facts or []:
            combined.extend(diff_instance(facts))
        return combined

    def locks(self, action: Action) -> dict[str, bool]:
        """A merge stage (carrying a user or a lane over, attaching a project) counts the target's
        documents before and after itself (its integrity check): stages on one target take an
        exclusive lock on ``instance:<target>/merge`` too, so two runs never interleave them."""
        stages: dict[str, Any] = {"merge_user": MergeUserDetails, "merge_lane": MergeLaneDetails,
                                  "migrate_attach": AttachMigrationDetails}
        if action.kind in stages:
            return {action.address: True, f"instance:{stages[action.kind].of(action).target}/merge": True}
        return {action.address: True}

    # -- executors -------------------------------------------------------------------------------

    @staticmethod
    def _major(ctx: RunContext, instance: str) -> int:
        """The installation's major version (``cryosparcm status``), asked once per run."""
        cache = ctx.options.setdefault("cryosparc_versions", {})
        if instance not in cache:
            config = ctx.desired.instances[instance]
            output = cryosparcm.run_argv([config.cryosparcm, "status"], f"cryosparcm status on {instance}")
            try:
                cache[instance] = cryosparcm.major_version(output)
            except ValueError as error:
                raise ApplyError(f"{instance}: {error}") from None
        return int(cache[instance])

    @executor("create_user")
    def create_user(self, action: Action, ctx: RunContext) -> str:
        details = CreateUserDetails.of(action)
        instance, email, variable = details.instance, details.email, details.password_env
        password = os.environ.get(variable)
        if not password:
            raise ApplyError(f"the environment variable {variable} (initial_password_env of {email}) is not set; "
                             "export it and run again")
        remember_secret(password)
        config = ctx.desired.instances[instance]
        with open_reader(ctx.desired, instance) as reader:
            if accounts.find_user(reader.db, email) is not None:
                return f"{email} already exists on {instance}"
            # With either driver the account is written as Meteor's accounts store it: `cryosparcm
            # createuser` takes the password only in its argument list, where every user of the
            # master host could read it in the process table (secrets never go on a command line).
            document = accounts.user_document(
                instance_id=config.instance_id, email=email, username=details.username,
                first_name=details.first_name, last_name=details.last_name, role=details.role,
                password_bcrypt=accounts.meteor_password_hash(password))
            inserted = accounts.insert_user(reader.db, document)
        return f"created {email} on {instance} as {document['_id']}" if inserted else f"{email} exists on {instance}"

    @executor("update_user")
    def update_user(self, action: Action, ctx: RunContext) -> str:
        details = UpdateUserDetails.of(action)
        with open_reader(ctx.desired, details.instance) as reader:
            found = accounts.find_user(reader.db, details.email)
            if found is None:
                raise ApplyError(f"{details.email} is no longer on {details.instance}; run plan again")
            # No documented cryosparcm command sets a name or role: both drivers set the fields.
            changes: dict[str, Any] = {key: value for key, value in details.changes.items()}
            accounts.update_user(reader.db, found["_id"], changes)
        return "set " + ", ".join(f"{key} = {value}" for key, value in sorted(details.changes.items()))

    @executor("remove_user")
    def remove_user(self, action: Action, ctx: RunContext) -> str:
        details = RemoveUserDetails.of(action)
        with open_reader(ctx.desired, details.instance) as reader:
            found = accounts.find_user(reader.db, details.email)
            if found is None:
                return f"{details.email} was already gone from {details.instance}"
            owned = accounts.owned_projects(reader.db, found["_id"])
            if owned:
                raise ApplyError(f"refusing to remove {details.email}: it now owns {', '.join(owned)}")
            # No documented cryosparcm command removes a user: both drivers remove the document.
            accounts.remove_user(reader.db, found["_id"])
        return f"removed the login {details.email} from {details.instance}"

    @executor("put_lane")
    def put_lane(self, action: Action, ctx: RunContext) -> str:
        details = PutLaneDetails.of(action)
        config = ctx.desired.instances[details.instance]
        lane = ctx.desired.lanes[details.lane]
        if config.driver == "cryosparcm" and lane.type == "cluster":
            return self._cluster_connect(ctx, details.instance, details.lane, lane)
        with open_reader(ctx.desired, details.instance) as reader:
            exists = any(item["name"] == details.lane for item in scheduler.lanes(reader.db))
            if config.driver == "cryosparcm" and config.master_hostname and not exists:
                return f"lane {details.lane} is created by its first worker's `cryosparcw connect --newlane`"
            scheduler.put_lane(reader.db, dict(details.lane_doc))
        return f"lane {details.lane} is in place on {details.instance}"

    def _cluster_connect(self, ctx: RunContext, instance: str, name: str, lane: LaneConfig) -> str:
        """``cryosparcm cluster connect`` in a directory holding the lane's two files (the command
        reads them from its current directory)."""
        config = ctx.desired.instances[instance]
        with tempfile.TemporaryDirectory(prefix="reconciler-cluster-") as directory:
            info = scheduler.read_cluster_info(Path(str(lane.cluster_info)))
            info["name"] = name
            import json

            Path(directory, "cluster_info.json").write_text(json.dumps(info, indent=2) + "\n")
            Path(directory, "cluster_script.sh").write_text(Path(str(lane.cluster_script)).read_text())
            cryosparcm.run_argv(cryosparcm.cluster_connect_argv(config.cryosparcm, self._major(ctx, instance)),
                                f"cryosparcm cluster connect ({name}) on {instance}", cwd=directory)
        return f"cluster lane {name} connected on {instance} with cryosparcm"

    @executor("put_target")
    def put_target(self, action: Action, ctx: RunContext) -> str:
        details = PutTargetDetails.of(action)
        config = ctx.desired.instances[details.instance]
        target = dict(details.target_doc)
        if config.driver == "cryosparcm" and target.get("type") == "cluster":
            return self._cluster_connect(ctx, details.instance, details.lane, ctx.desired.lanes[details.lane])
        if config.driver == "cryosparcm" and target.get("type") == "node" and config.master_hostname:
            return self._worker_connect(ctx, details, target)
        # Node targets otherwise: reconciler writes the target's managed fields and keeps the slots
        # `cryosparcw connect --update` detected on the worker.
        with open_reader(ctx.desired, details.instance) as reader:
            if not any(lane["name"] == details.lane for lane in scheduler.lanes(reader.db)):
                raise ApplyError(f"lane {details.lane} is not on {details.instance}; run plan again")
            scheduler.put_target(reader.db, target)
        return f"target {details.target} of lane {details.lane} is in place on {details.instance}"

    def _worker_connect(self, ctx: RunContext, details: PutTargetDetails, target: dict[str, Any]) -> str:
        """`cryosparcw connect` on the worker over ssh (v4), or `cryosparcm worker connect` (v5)."""
        import shlex

        from reconciler.kinds.instances.observe import ssh_settings

        instance = details.instance
        config = ctx.desired.instances[instance]
        major = self._major(ctx, instance)
        with open_reader(ctx.desired, instance) as reader:
            known = {item["name"] for item in scheduler.targets(reader.db)}
            new_lane = not any(item["name"] == details.lane for item in scheduler.lanes(reader.db))
        worker_path = str(target["worker_bin_path"]).rsplit("/bin/cryosparcw", 1)[0]
        argv = cryosparcm.worker_connect_argv(
            worker_path, major, config.cryosparcm, hostname=target["hostname"], master=str(config.master_hostname),
            port=config.base_port, lane=details.lane, new_lane=new_lane, ssh_str=target["ssh_str"],
            ssd_path=target.get("cache_path"), ssd_quota_mb=target.get("cache_quota_mb"))
        if target["name"] in known:
            argv.append("--update")
        if major < 5:
            ssh = ssh_settings(ctx.desired)
            argv = ["ssh", *ssh.base_args(), "--", target["ssh_str"], shlex.join(argv)]
        cryosparcm.run_argv(argv, f"connect worker {target['hostname']} to {instance}")
        return f"worker {target['hostname']} connected to lane {details.lane} on {instance}"

    @executor("remove_target")
    def remove_target(self, action: Action, ctx: RunContext) -> str:
        details = TargetDetails.of(action)
        config = ctx.desired.instances[details.instance]
        if config.driver == "cryosparcm":
            cryosparcm.run_argv(cryosparcm.remove_target_argv(config.cryosparcm, self._major(ctx, details.instance),
                                                              details.target), "remove target")
        else:
            with open_reader(ctx.desired, details.instance) as reader:
                scheduler.remove_target(reader.db, details.target)
        return f"removed target {details.target} from lane {details.lane} on {details.instance}"

    @executor("remove_lane")
    def remove_lane(self, action: Action, ctx: RunContext) -> str:
        details = LaneDetails.of(action)
        config = ctx.desired.instances[details.instance]
        if config.driver == "cryosparcm":
            cryosparcm.run_argv(cryosparcm.remove_lane_argv(config.cryosparcm, self._major(ctx, details.instance),
                                                            details.lane), "remove lane")
        else:
            with open_reader(ctx.desired, details.instance) as reader:
                scheduler.remove_lane(reader.db, details.lane)
        return f"removed lane {details.lane} (and its targets) from {details.instance}"

    # -- whole-instance migration (alternative B) ------------------------------------------------

    @staticmethod
    def _checkpoint(ctx: RunContext, details: ProjectStepDetails | AttachMigrationDetails, **stamps: Any) -> None:
        """Create or update the project's checkpoint row (one committed write per step)."""
        key = (details.target, details.source, details.uid)
        sized = details if isinstance(details, (MovedProjectDetails, AttachMigrationDetails)) else None
        with ctx.state.session() as session:
            row = session.get(MigratedProject, key)
            if row is None:
                row = MigratedProject(target=details.target, source=details.source, source_uid=details.uid,
                                      source_path=details.source_path, path=details.path,
                                      files=sized.files if sized else None, bytes=sized.bytes if sized else None,
                                      started_at=_now())
            for name, value in stamps.items():
                setattr(row, name, value)
            session.add(row)
            session.commit()

    @executor("migrate_detach")
    def migrate_detach(self, action: Action, ctx: RunContext) -> str:
        details = AttachMigrationDetails.of(action)
        self._checkpoint(ctx, details, new_uid=details.new_uid)
        with open_driver(ctx.desired, details.source) as driver:
            document = driver.reader.project(details.uid) or {}
            if not document.get("detached"):
                driver.detach(details.uid)
        self._checkpoint(ctx, details, detached_at=_now())
        return f"detached {details.uid} from {details.source}"

    @executor("migrate_copy")
    def migrate_copy(self, action: Action, ctx: RunContext) -> str:
        details = MigrateCopyDetails.of(action)
        source, destination = Path(details.source_path), Path(details.path)
        if not source.is_dir():
            raise ApplyError(f"{source} does not exist any more; run plan again")
        summary, _ = copy_project(source, destination,
                                  lambda done, total: ctx.progress(f"copy {details.uid}", done, total))
        self._checkpoint(ctx, details, copied_at=_now(), files=summary.files, bytes=summary.bytes)
        return f"copied and verified {summary.files:,} files, {human_bytes(summary.bytes)}"

    @executor("migrate_attach")
    def migrate_attach(self, action: Action, ctx: RunContext) -> str:
        details = AttachMigrationDetails.of(action)
        imported = details.imported_from.as_dict()
        if details.path != details.source_path and Path(details.source_path).exists():
            with ctx.state.session() as session:
                row = session.get(MigratedProject, (details.target, details.source, details.uid))
                if row is None or row.copied_at is None:
                    raise ApplyError(f"the copy {details.source_path} -> {details.path} was never verified; "
                                     "refusing to attach it")
        directory = Path(details.path)
        try:
            original = model.read_records(directory)
        except model.RecordsError as error:
            raise ApplyError(f"cannot attach {details.path}: {error}") from None
        lock_before = model.read_lock(directory)
        with open_driver(ctx.desired, details.target) as driver:
            db = driver.reader.db
            found = find_imported(driver.reader, details.imported_from.instance_id, details.imported_from.uid)
            uid = str(found["uid"]) if found is not None else details.new_uid
            before = integrity.census(db)
            present = {model.PROJECTS: db[model.PROJECTS].count_documents({"uid": uid}),
                       model.WORKSPACES: db[model.WORKSPACES].count_documents({"project_uid": uid}),
                       model.JOBS: db[model.JOBS].count_documents({"project_uid": uid})}
            if found is not None and not found.get(model.ATTACHING):
                notes = ["it was attached already"]
            else:
                uid, notes = driver.attach(details.path, uid, imported)
            notes += self._map_owner(driver.reader, uid, details.owner_email, details.target)
            # an attach of ours cut short (ATTACHING) may have rewritten part of the records to its uid
            resumed = {details.uid, uid} if found is not None and found.get(model.ATTACHING) else set()
            problems = self._check_attached(driver.reader, uid, details.path, original, before, present, resumed)
            if problems:  # this stage's rollback: the attach is undone, the next run attaches again
                # marked as cut short first: a run killed inside the rollback redoes the attach
                db[model.PROJECTS].update_one({"uid": uid}, {"$set": {model.ATTACHING: _now()}})
                driver.reader._remove_documents(uid)
                model.write_records(directory, original)
                if lock_before is None:
                    model.remove_lock(directory)
                else:
                    model.write_lock(directory, lock_before)
                raise ApplyError(f"integrity check after attaching {details.uid} as {uid} on {details.target} "
                                 f"failed ({'; '.join(problems)}); the attach was rolled back")
        self._checkpoint(ctx, details, new_uid=uid, attached_at=_now())
        return (f"moved {details.uid} ({details.source}) -> {uid} ({details.target}) at {details.path}"
                + "".join(f"; {note}" for note in notes))

    # -- whole-instance migration (alternative A) ------------------------------------------------

    @executor("migrate_archive")
    def migrate_archive(self, action: Action, ctx: RunContext) -> str:
        details = ProjectStepDetails.of(action)
        self._checkpoint(ctx, details, new_uid=details.uid)
        with open_driver(ctx.desired, details.source) as driver:
            if not (driver.reader.project(details.uid) or {}).get("archived"):
                self._checkpoint(ctx, details, archived_at=_now())  # before: a kill in between still unarchives
                driver.archive(details.uid)
        return f"archived {details.uid} on {details.source} (its path changes)"

    @executor("maintenance_on")
    def maintenance_on(self, action: Action, ctx: RunContext) -> str:
        """``cryosparcm maintenancemode on`` on the source of a database migration (alternative A's
        freeze), then ``status`` to see it took."""
        details = CopyDatabaseDetails.of(action)
        program = ctx.desired.instances[details.source].cryosparcm
        cryosparcm.run_argv(cryosparcm.maintenance_argv(program, "on"),
                            f"cryosparcm maintenancemode on ({details.source})")
        output = cryosparcm.run_argv(cryosparcm.maintenance_argv(program, "status"),
                                     f"cryosparcm maintenancemode status ({details.source})")
        try:
            on = cryosparcm.maintenance_is_on(output)
        except ValueError as error:
            raise ApplyError(f"{details.source}: {error}") from None
        if not on:
            raise ApplyError(f"{details.source} is still not in maintenance mode after `cryosparcm maintenancemode "
                             "on`; refusing to copy its database")
        return f"{details.source} is in maintenance mode (queued jobs wait, running ones finish)"

    @executor("copy_database")
    def copy_database(self, action: Action, ctx: RunContext) -> str:
        from reconciler.kinds.instances.database_migration import copy_database

        details = CopyDatabaseDetails.of(action)
        key = (details.target, details.source)
        with ctx.state.session() as session:
            row = session.get(CopiedDatabase, key)
            if row is not None and row.copied_at is not None:
                return "the database was copied already"
        with open_reader(ctx.desired, details.source) as source, \
                open_reader(ctx.desired, details.target) as target:
            if row is not None:  # a copy cut short: drop what it inserted, copy again
                for name in source.db.list_collection_names():
                    if not name.startswith("system."):
                        target.db.drop_collection(name)
            elif target.db[model.PROJECTS].count_documents({}):
                raise ApplyError(f"{details.target}'s database holds projects now; run plan again")
            started = _now()
            with ctx.state.session() as session:
                current = session.get(CopiedDatabase, key)
                if current is None:
                    current = CopiedDatabase(target=key[0], source=key[1], started_at=started)
                current.started_at = started
                session.add(current)
                session.commit()
            count = copy_database(source.db, target.db)
        with ctx.state.session() as session:
            done = session.get(CopiedDatabase, key)
            assert done is not None
            done.copied_at, done.documents = _now(), count
            session.add(done)
            session.commit()
        return f"copied {count:,} documents from {details.source} into {details.target}"

    @executor("repoint")
    def repoint(self, action: Action, ctx: RunContext) -> str:
        details = MovedProjectDetails.of(action)
        with ctx.state.session() as session:
            row = session.get(MigratedProject, (details.target, details.source, details.uid))
        if Path(details.source_path).exists() and (row is None or row.copied_at is None):
            raise ApplyError(f"the copy {details.source_path} -> {details.path} was never verified; refusing "
                             "to point the project at it")
        with open_driver(ctx.desired, details.target) as driver:
            driver.update_path(details.uid, details.path)
        model.write_lock(Path(details.path), ctx.desired.instances[details.target].instance_id)
        return f"{details.uid} on {details.target} now lives in {details.path}"

    @executor("migrate_unarchive")
    def migrate_unarchive(self, action: Action, ctx: RunContext) -> str:
        details = MovedProjectDetails.of(action)
        with open_driver(ctx.desired, details.target) as driver:
            if (driver.reader.project(details.uid) or {}).get("archived"):
                driver.unarchive(details.uid, details.path)
        return f"unarchived {details.uid} on {details.target}"

    @executor("relock")
    def relock(self, action: Action, ctx: RunContext) -> str:
        details = MovedProjectDetails.of(action)
        directory = Path(details.path)
        ids = {ctx.desired.instances[name].instance_id for name in (details.source, details.target)}
        if model.read_lock(directory) not in (None, *ids):
            raise ApplyError(f"{directory}/cs.lock names another instance; refusing to take it over")
        model.write_lock(directory, ctx.desired.instances[details.target].instance_id)
        return f"{directory}/cs.lock now names {details.target}"

    @executor("merge_user")
    def merge_user(self, action: Action, ctx: RunContext) -> str:
        """Copy a source user to the target: same emails, names, role and password hash (Meteor's
        bcrypt(SHA-256) has no per-instance secret, so the password keeps working), a new id."""
        details = MergeUserDetails.of(action)
        with open_reader(ctx.desired, details.source) as source, \
                open_reader(ctx.desired, details.target) as target:
            if accounts.find_user(target.db, details.email) is not None:
                return f"{details.email} is on {details.target} already"
            found = accounts.find_user(source.db, details.email)
            if found is None:
                raise ApplyError(f"{details.email} is no longer on {details.source}; run plan again")
            document = source.db[model.USERS].find_one({"_id": found["_id"]}) or {}
            copy = {key: value for key, value in document.items()
                    if key not in ("_id", "services")}
            bcrypt_hash = ((document.get("services") or {}).get("password") or {}).get("bcrypt")
            copy["_id"] = accounts.meteor_id(f"{target.instance_id}\0{details.email}")
            copy["services"] = {"password": {"bcrypt": bcrypt_hash}} if bcrypt_hash else {}
            copy["merged_from"] = {"instance_id": source.instance_id, "user_id": document.get("_id")}
            before = integrity.census(target.db)
            inserted = accounts.insert_user(target.db, copy)
            # the users stage's integrity check: one more user, found by its email as the copy
            problems = integrity.compare(before, integrity.census(target.db), {model.USERS: int(inserted)})
            found_now = accounts.find_user(target.db, details.email)
            if found_now is None or found_now["_id"] != copy["_id"]:
                problems.append(f"{details.email} is not found on {details.target} as the user just carried over"
                                + (f" (its id {copy['_id']} is another account's: remove or re-id that account)"
                                   if not inserted and target.db[model.USERS].find_one({"_id": copy["_id"]})
                                   else ""))
            stored = ((target.db[model.USERS].find_one({"_id": copy["_id"]}) or {}).get("services") or {})
            if (stored.get("password") or {}).get("bcrypt") != bcrypt_hash:
                problems.append("its password hash differs from the source's")
            if problems:  # this stage's rollback: the user carried over is removed again
                if inserted:
                    target.db[model.USERS].delete_one({"_id": copy["_id"]})
                raise ApplyError(f"integrity check after carrying {details.email} over to {details.target} failed "
                                 f"({'; '.join(problems)}); the user was rolled back")
        return f"carried {details.email} over from {details.source}"

    @executor("merge_lane")
    def merge_lane(self, action: Action, ctx: RunContext) -> str:
        details = MergeLaneDetails.of(action)
        with open_reader(ctx.desired, details.source) as source, \
                open_reader(ctx.desired, details.target) as target:
            lane = next((item for item in scheduler.lanes(source.db) if item["name"] == details.lane), None)
            if lane is None:
                raise ApplyError(f"lane {details.lane} is no longer on {details.source}; run plan again")
            targets = [item for item in scheduler.targets(source.db) if item.get("lane") == details.lane]
            for item in targets:  # targets first: a lane never appears without them
                scheduler.put_target(target.db, item)
            scheduler.put_lane(target.db, lane)
            # the lanes stage's integrity check: the lane once, with every target the source gives it
            problems = []
            if [item["name"] for item in scheduler.lanes(target.db)].count(details.lane) != 1:
                problems.append(f"lane {details.lane} is not on {details.target} exactly once")
            carried = {item["name"] for item in scheduler.targets(target.db) if item.get("lane") == details.lane}
            missing = sorted({item["name"] for item in targets} - carried)
            if missing:
                problems.append(f"target(s) {', '.join(missing)} missing")
            if problems:  # this stage's rollback: the lane and its targets go again
                scheduler.remove_lane(target.db, details.lane)
                raise ApplyError(f"integrity check after carrying lane {details.lane} over to {details.target} "
                                 f"failed ({'; '.join(problems)}); the lane was rolled back")
        return f"carried lane {details.lane} ({len(targets)} target(s)) over from {details.source}"

    @staticmethod
    def _check_attached(reader: Any, uid: str, path: str, original: model.Records, before: integrity.Census,
                        present: dict[str, int], resumed: set[str]) -> list[str]:
        """Integrity after an attach (the merge's project stage): the target's document counts
        grew by exactly this project (``present``: what of it was there before, an attach cut
        short), no reference dangles that did not before, the workspace and job documents in the
        database and in the re-exported records are by sha256 what the exported records
        (``original``) said, once their project uid and session directories are carried over,
        and the owner is a user here. ``resumed``: the two uids records may name when this attach
        redoes one a kill cut short in the middle of its export."""
        problems = []
        expected = model.rewrite_uid(original, uid)
        workspaces = model.rebase_session_dirs(expected.workspaces, str(original.project.get("project_dir") or ""),
                                               path)
        if any(item.get("project_uid") not in {None, original.project.get("uid"), *resumed}
               for item in [*original.workspaces, *original.jobs]):
            problems.append(f"the exported records of {original.project.get('uid')} name another project")
        wanted = integrity.documents_digest(workspaces, expected.jobs)
        stored = integrity.stored_digest(reader.db, uid)
        if stored != wanted:
            problems.append(f"sha256 of {uid}'s workspaces and jobs in the database {stored[:12]} differs from "
                            f"the exported records' {wanted[:12]}")
        try:
            exported = model.read_records(Path(path))
        except model.RecordsError as error:
            problems.append(f"the re-exported records cannot be read: {error}")
        else:
            if integrity.documents_digest(exported.workspaces, exported.jobs) != wanted:
                problems.append(f"sha256 of the re-exported records in {path} differs from what was attached")
        changes = {model.PROJECTS: 1 - present[model.PROJECTS],
                   model.WORKSPACES: len(original.workspaces) - present[model.WORKSPACES],
                   model.JOBS: len(original.jobs) - present[model.JOBS]}
        problems += integrity.compare(before, integrity.census(reader.db), changes)
        owner = (reader.project(uid) or {}).get("owner_user_id")
        if owner and reader.db[model.USERS].find_one({"_id": owner}) is None:
            problems.append(f"its owner {owner} is not a user here")
        return problems

    @staticmethod
    def _map_owner(reader: Any, uid: str, email: str | None, target: str) -> list[str]:
        """Point the attached project at the target's user with its source owner's email (user ids
        differ between instances; users are matched by email), and export the records again."""
        if not email:
            return []
        user = accounts.find_user(reader.db, email)
        if user is None:
            return [f"its owner {email} is not a user on {target}; declare [users.\"{email}\"] to create it"]
        project = reader.project(uid) or {}
        if project.get("owner_user_id") != user["_id"]:
            reader.db[model.PROJECTS].update_one({"uid": uid}, {"$set": {"owner_user_id": user["_id"]}})
            reader.export(uid)
        return []

    def commands(self) -> list[Any]:
        from reconciler.kinds.instances.commands import instances_group, lanes_group, users_group

        return [users_group, lanes_group, instances_group]
