"""Typed action details: the model a diff builds is what the plan holds, key for key (so
typing changes no plan JSON and no action id), and an executor reading details that do not
fit gets one ApplyError naming the action."""

from __future__ import annotations

import pytest

from reconciler.engine.actions import Action
from reconciler.errors import ApplyError
from reconciler.kinds.backups.diff import PruneDetails
from reconciler.kinds.sessions.diff import ChangeDetails, DeleteDetails

CHANGE = {"instance": "cs", "project_uid": "P3", "session_uid": "S1", "session_dir": "/data/P3/S000001",
          "datatype": "thumbnails", "status": "archived", "from": "active"}


def test_the_plan_holds_exactly_the_declared_fields_and_the_id_is_the_dict_s() -> None:
    typed = Action.create(address="session:P3/S1/thumbnails", kind="set_state", reason="r",
                          details=ChangeDetails.model_validate(CHANGE))
    plain = Action.create(address="session:P3/S1/thumbnails", kind="set_state", reason="r", details=dict(CHANGE))
    assert typed.details == CHANGE  # "from", not "from_": the plan JSON as before
    assert typed.id == plain.id


def test_an_executor_reads_back_what_the_diff_built() -> None:
    details = DeleteDetails(**{**CHANGE, "status": "deleted"}, file_count=3, bytes=42)  # type: ignore[arg-type]
    action = Action.create(address="session:P3/S1/particles", kind="delete_data", reason="r", details=details)
    assert DeleteDetails.of(action) == details
    assert action.file_count == 3 and action.byte_count == 42


def test_details_that_do_not_fit_are_one_error_naming_the_action() -> None:
    action = Action.create(address="database:meteor", kind="prune", reason="r",
                           details={"backup_id": "b", "path": "/x", "manifest": "/x.manifest.json", "bytes": "many"})
    with pytest.raises(ApplyError, match=r"^database:meteor: the planned prune does not fit this version of "
                                         r"reconciler \((bytes|documents): .*\); run plan again$"):
        PruneDetails.of(action)


def _instances_actions() -> list[Action]:
    """One of every action the instances kind plans."""
    from reconciler.kinds.instances.database_migration import (
        DatabaseMigrationFacts,
        DatabaseProject,
        diff_database_migration,
    )
    from reconciler.kinds.instances.diff import LaneFacts, TargetFacts, UserFacts, diff_lane, diff_user
    from reconciler.kinds.instances.migration import MigratingProject, MigrationFacts, diff_migration
    from reconciler.providers.cryosparc import scheduler

    user = dict(instance="new", email="a@x.org", absent=False, username="a", first_name="Ada", last_name="L",
                name_declared=True, role="user", password_env="A_PW", password_set=True)
    actual = {"name": "Ada", "first_name": "Ada", "last_name": "", "role": "user"}
    node = scheduler.node_target(lane="ws", hostname="gpu1", ssh_str="u@gpu1", worker_path="/w", ssd_path=None,
                                 ssd_quota_mb=None)
    lane = scheduler.lane_document("ws", "node")
    actions = [*diff_user(UserFacts(**user), []).actions,  # type: ignore[arg-type]
               *diff_user(UserFacts(**{**user, "user_id": "u1", "actual": actual}), []).actions,  # type: ignore[arg-type]
               *diff_user(UserFacts(**{**user, "absent": True, "user_id": "u1"}), []).actions,  # type: ignore[arg-type]
               *diff_lane(LaneFacts("new", "ws", lane, None, [TargetFacts("gpu1", node, None, None),
                                                              TargetFacts("old", None, node, None)],
                                    prune_targets=True), []).actions,
               *diff_lane(LaneFacts("new", "gone", None, lane, [], prune_lane=True), []).actions]
    actions += diff_migration(MigrationFacts(
        target="new", source="old", source_id="id-old", next_number=5, users_to_merge=["z@x.org"],
        lanes_to_merge=["hpc"], projects=[MigratingProject(uid="P1", title="a", source_path="/o/a", path="/n/a",
                                                           detached=False)])).actions
    actions += diff_database_migration(DatabaseMigrationFacts(
        target="new", source="old", source_id="id-old", target_id="id-new", maintenance=False, projects=[
            DatabaseProject(uid="P1", source_path="/o/a", path="/n/a", archived=False, detached=False, files=2,
                            bytes=9),
            DatabaseProject(uid="P2", source_path="/s/b", path="/s/b", archived=False, detached=False)])).actions
    return actions


def test_every_instances_action_reads_back_as_its_executor_s_model() -> None:
    from reconciler.kinds.instances import database_migration as a
    from reconciler.kinds.instances import diff as d
    from reconciler.kinds.instances import migration as b

    models = {"create_user": d.CreateUserDetails, "update_user": d.UpdateUserDetails,
              "remove_user": d.RemoveUserDetails, "put_lane": d.PutLaneDetails, "put_target": d.PutTargetDetails,
              "remove_target": d.TargetDetails, "remove_lane": d.LaneDetails, "merge_user": b.MergeUserDetails,
              "merge_lane": b.MergeLaneDetails, "migrate_detach": b.AttachMigrationDetails,
              "migrate_attach": b.AttachMigrationDetails, "migrate_copy": a.MigrateCopyDetails,
              "migrate_archive": a.ProjectStepDetails, "copy_database": a.CopyDatabaseDetails,
              "maintenance_on": a.CopyDatabaseDetails,
              "repoint": a.MovedProjectDetails, "migrate_unarchive": a.MovedProjectDetails,
              "relock": a.MovedProjectDetails}
    actions = _instances_actions()
    assert {action.kind for action in actions} == set(models)
    for action in actions:
        assert models[action.kind].of(action).as_dict() == action.details, action.kind
    copies = [action for action in actions if action.kind == "migrate_copy"]
    assert [a.MigrateCopyDetails.of(copy).new_uid for copy in copies] == ["P5", None]  # alternative B, then A
    created = next(action for action in actions if action.kind == "create_user")
    assert created.details["password_env"] == "A_PW" and "password" not in created.details


def test_update_user_details_name_only_the_managed_fields() -> None:
    from reconciler.kinds.instances.diff import UpdateUserDetails

    action = Action.create(address="user:new/a@x.org", kind="update_user", reason="r",
                           details={"instance": "new", "email": "a@x.org", "user_id": "u1",
                                    "changes": {"services": "x"}})
    with pytest.raises(ApplyError, match=r"^user:new/a@x.org: the planned update_user does not fit .*changes"):
        UpdateUserDetails.of(action)


def test_merge_stages_on_one_target_share_an_exclusive_lock() -> None:
    from reconciler.kinds.instances.kind import InstancesKind

    kind = InstancesKind()
    stages = [action for action in _instances_actions()
              if action.kind in ("merge_user", "merge_lane", "migrate_attach")]
    assert {action.kind for action in stages} == {"merge_user", "merge_lane", "migrate_attach"}
    for action in stages:
        assert kind.locks(action) == {action.address: True, "instance:new/merge": True}
    other = next(action for action in _instances_actions() if action.kind == "create_user")
    assert kind.locks(other) == {other.address: True}
