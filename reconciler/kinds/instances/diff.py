"""The instances planner: pure functions from observed users and lanes to actions.

Users (``user:<instance>/<email>``): create when missing, set name/role when they differ,
remove only when declared ``absent`` (destructive) and never while the user owns projects.
Lanes (``lane:<instance>/<lane>``): create/update the lane and its targets; remove targets a
lane with ``prune = true`` does not name and lanes an instance with ``prune_lanes = true``
does not declare (both destructive). A declared lane that would be left without a
functional target (the CryoSPARC guide's rule) is an error naming every target and why.
Every user action, and every lane or target created or updated, runs before any project
action on the same instance (projects are attached to owners and lanes that exist). Removals
do not: a project never needs a lane gone, and a removal left waiting for --allow-destroy must
not hold up the projects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from reconciler.engine.actions import Action, AddressMessage, Details
from reconciler.engine.kind import Diff

Role = Literal["user", "admin"]
UserField = Literal["role", "first_name", "last_name", "name"]  # what update_user may set


@dataclass
class UserFacts:
    instance: str
    email: str
    absent: bool
    username: str
    first_name: str
    last_name: str
    name_declared: bool
    role: Role | None  # None: not declared (new accounts are "user"; existing ones keep theirs)
    password_env: str | None
    password_set: bool  # the environment variable is set (its value is never read here)
    user_id: str | None = None  # None: no such user on the instance
    actual: dict[str, str] = field(default_factory=dict)  # name, first_name, last_name, role
    owned: list[str] = field(default_factory=list)  # uids of projects the user owns
    from_source: bool = False  # found on the migration's source: merge_user carries it over first


@dataclass
class TargetFacts:
    name: str
    declared: dict[str, Any] | None  # the managed fields the config asks for (None: not declared)
    actual: dict[str, Any] | None  # as the instance stores it (None: missing)
    problem: str | None  # why it is not functional (None: it answers)


@dataclass
class LaneFacts:
    instance: str
    name: str
    declared: dict[str, Any] | None  # lane document the config asks for (None: not declared)
    actual: dict[str, Any] | None
    targets: list[TargetFacts] = field(default_factory=list)
    prune_targets: bool = False
    prune_lane: bool = False  # undeclared, and its instance has prune_lanes = true
    config_problem: str | None = None  # e.g. cluster_info.json unreadable


@dataclass
class InstanceFacts:
    instance: str
    users: list[UserFacts] = field(default_factory=list)
    lanes: list[LaneFacts] = field(default_factory=list)
    project_addresses: list[str] = field(default_factory=list)  # project actions that wait for these
    migration: Any = None  # MigrationFacts when the instance has migrate_from
    database_migration: Any = None  # DatabaseMigrationFacts with migration = "database"


class UserDetails(Details):
    """A login on an instance, by email (the base of the user actions)."""

    instance: str
    email: str


class CreateUserDetails(UserDetails):
    """A ``create_user``: the new login's names and role, and ``password_env``, the name of the
    environment variable holding its first password (read when it runs; never the password)."""

    username: str
    first_name: str
    last_name: str
    role: Role
    password_env: str


class UpdateUserDetails(UserDetails):
    """An ``update_user``: the fields of the login ``user_id`` that differ, with their new values."""

    user_id: str
    changes: dict[UserField, str]


class RemoveUserDetails(UserDetails):
    """A ``remove_user``: the login ``user_id``, declared absent (destructive)."""

    user_id: str


class LaneDetails(Details):
    """A ``remove_lane`` (destructive; its targets go with it), and the base of the lane actions:
    lane ``lane`` on ``instance``."""

    instance: str
    lane: str


class PutLaneDetails(LaneDetails):
    """A ``put_lane``: the lane document the config asks for (created, or replacing the stored one)."""

    lane_doc: dict[str, Any]


class TargetDetails(LaneDetails):
    """A ``remove_target`` (destructive): target ``target`` of the lane."""

    target: str


class PutTargetDetails(TargetDetails):
    """A ``put_target``: the target's managed fields as the config asks for them."""

    target_doc: dict[str, Any]


def user_address(instance: str, email: str) -> str:
    return f"user:{instance}/{email}"


def lane_address(instance: str, lane: str) -> str:
    return f"lane:{instance}/{lane}"


def _changes(facts: UserFacts) -> dict[UserField, str]:
    wanted: dict[UserField, str] = {"role": facts.role} if facts.role else {}
    if facts.name_declared:
        wanted["first_name"], wanted["last_name"] = facts.first_name, facts.last_name
        wanted["name"] = " ".join(part for part in (facts.first_name, facts.last_name) if part)
    return {key: value for key, value in wanted.items() if facts.actual.get(key) != value}


def diff_user(facts: UserFacts, before: list[str], after: list[str] | None = None) -> Diff:
    diff = Diff()
    address = user_address(facts.instance, facts.email)
    basis = asdict(facts)
    if facts.absent:
        if facts.user_id is None:
            return diff
        if facts.owned:
            diff.errors.append(AddressMessage(address=address, message=(
                f"refusing to remove {facts.email} from {facts.instance}: it owns {', '.join(facts.owned)}; move "
                "those projects to another owner (or detach them) first")))
            return diff
        diff.actions.append(Action.create(address=address, kind="remove_user", destructive=True, facts=basis,
                                          reason=f"declared absent: remove the login {facts.email}",
                                          details=RemoveUserDetails(instance=facts.instance, email=facts.email,
                                                                    user_id=facts.user_id),
                                          before=before,
                                          depends_on=after))
        return diff
    if facts.user_id is None:
        if not facts.password_env:
            diff.errors.append(AddressMessage(address=address, message=(
                f'{facts.email} does not exist on {facts.instance}; set initial_password_env = "VARIABLE" on '
                f'[users."{facts.email}"] (the environment variable holding its first password) to create it')))
            return diff
        if not facts.password_set:
            diff.errors.append(AddressMessage(address=address, message=(
                f"{facts.email} does not exist on {facts.instance} and the environment variable "
                f"{facts.password_env} (its initial_password_env) is not set; export it and plan again")))
            return diff
        diff.actions.append(Action.create(
            address=address, kind="create_user", facts=basis,
            reason=f"create the login {facts.email} ({facts.username}, {facts.role or 'user'}) with the password from "
                   f"${facts.password_env}",
            details=CreateUserDetails(instance=facts.instance, email=facts.email, username=facts.username,
                                      first_name=facts.first_name, last_name=facts.last_name,
                                      role=facts.role or "user", password_env=facts.password_env),
            before=before, depends_on=after))
        return diff
    changes = _changes(facts)
    if facts.from_source:
        after = [*(after or []), address]  # after the merge_user at this address
    if changes:
        said = ", ".join(f"{key} {facts.actual.get(key) or '-'} -> {value}" for key, value in sorted(changes.items()))
        diff.actions.append(Action.create(address=address, kind="update_user", facts=basis, reason=said,
                                          details=UpdateUserDetails(instance=facts.instance, email=facts.email,
                                                                    user_id=facts.user_id, changes=changes),
                                          before=before, depends_on=after))
    return diff


def _differs(declared: dict[str, Any], actual: dict[str, Any] | None) -> bool:
    return actual is None or any(actual.get(key) != value for key, value in declared.items())


def diff_lane(facts: LaneFacts, before: list[str], after: list[str] | None = None) -> Diff:
    diff = Diff()
    address = lane_address(facts.instance, facts.name)
    basis = asdict(facts)
    base = LaneDetails(instance=facts.instance, lane=facts.name)
    if facts.declared is None:
        if facts.actual is None:
            return diff
        if facts.prune_lane:
            names = ", ".join(target.name for target in facts.targets) or "no targets"
            diff.actions.append(Action.create(
                address=address, kind="remove_lane", destructive=True, facts=basis, details=base, depends_on=after,
                reason=f"no [lanes.*] entry names it and prune_lanes = true: remove it ({names})"))
            return diff
        working = [target for target in facts.targets if target.problem is None]
        if not working:
            why = "; ".join(f"{target.name}: {target.problem}" for target in facts.targets) or "it has no targets"
            diff.warnings.append(AddressMessage(address=address, message=(
                f"lane {facts.name} on {facts.instance} is not in the config and has no functional target ({why}); "
                f"declare it in [lanes.{facts.name}] or set prune_lanes = true on [instances.{facts.instance}]")))
        return diff
    if facts.config_problem:
        diff.errors.append(AddressMessage(address=address, message=facts.config_problem))
        return diff
    previous: list[str] = list(after or [])
    if _differs(facts.declared, facts.actual):
        action = Action.create(address=address, kind="put_lane", facts=basis,
                               details=PutLaneDetails(instance=facts.instance, lane=facts.name,
                                                      lane_doc=facts.declared),
                               reason=("create" if facts.actual is None else "update") +
                               f" the {facts.declared['type']} lane {facts.name}", before=before,
                               depends_on=previous)
        diff.actions.append(action)
        previous = [action.id]
    remaining: list[TargetFacts] = []
    pruned: list[str] = []
    for target in facts.targets:
        if target.declared is None:
            if facts.prune_targets:
                pruned.append(f"{target.name}: pruned (not in [lanes.{facts.name}], prune = true)")
                diff.actions.append(Action.create(
                    address=address, kind="remove_target", destructive=True, facts=basis,
                    details=TargetDetails(instance=facts.instance, lane=facts.name, target=target.name),
                    depends_on=previous,
                    reason=f"target {target.name} is not in [lanes.{facts.name}] and prune = true: remove it"))
                continue
            diff.notes.append(AddressMessage(address=address, message=(
                f"target {target.name} of lane {facts.name} is not in the config; kept (prune = true removes it)")))
            remaining.append(target)
            continue
        remaining.append(target)
        if _differs(target.declared, target.actual):
            diff.actions.append(Action.create(
                address=address, kind="put_target", facts=basis, depends_on=previous, before=before,
                details=PutTargetDetails(instance=facts.instance, lane=facts.name, target=target.name,
                                         target_doc=target.declared),
                reason=("add" if target.actual is None else "update") + f" target {target.name}"))
    if not any(target.problem is None for target in remaining):
        why = "; ".join([*pruned, *(f"{target.name}: {target.problem}" for target in remaining)]) \
            or "no target would remain"
        diff.errors.append(AddressMessage(address=address, message=(
            f"refusing to leave lane {facts.name} on {facts.instance} without a functional target ({why}); "
            "fix a target (or add one that answers) and plan again")))
        diff.actions = []
    return diff


def diff_instance(facts: InstanceFacts) -> Diff:
    combined = Diff()
    after: list[str] = []
    hold = False  # the database copy is still to come but not in this plan (the source is busy)
    if facts.database_migration is not None:  # users and lanes are reconciled on the copied database
        from reconciler.kinds.instances.database_migration import database_address, diff_database_migration

        planned = diff_database_migration(facts.database_migration)
        combined.extend(planned)
        after = [database_address(facts.instance)]
        hold = not facts.database_migration.copy_done and not any(
            action.kind == "copy_database" for action in planned.actions)
    local = Diff()
    for user in facts.users:
        local.extend(diff_user(user, facts.project_addresses, after))
    for lane in facts.lanes:
        local.extend(diff_lane(lane, facts.project_addresses, after))
    if hold and local.actions:
        local.notes.append(AddressMessage(address=f"instance:{facts.instance}", message=(
            f"{len(local.actions)} user and lane change(s) on {facts.instance} wait for the database copy "
            "(they are made on the copied database)")))
        local.actions = []
    combined.extend(local)
    if facts.migration is not None:
        from reconciler.kinds.instances.migration import diff_migration

        combined.extend(diff_migration(facts.migration))
    return combined
