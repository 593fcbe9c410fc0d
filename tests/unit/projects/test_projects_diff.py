"""The projects planner is pure: facts in, ordered steps out. Its rules are planner cases
(tests/data/planner/projects-*.toml); what stays here needs more than one diff's output."""

from __future__ import annotations

from reconciler.engine.actions import Action
from reconciler.engine.ordering import resolve_dependencies
from reconciler.kinds.projects.diff import DirFacts, DocFacts, ProjectFacts, diff_project


def test_archive_runs_before_a_backup_of_the_instance_database_in_the_same_plan() -> None:
    # Not a case: the order comes from resolve_dependencies over this diff's actions together
    # with another kind's (a backup of the instance database), not from one diff's output.
    move = diff_project(ProjectFacts(
        name="apo", uid="P12", source_instance="old", instance="old", path="/data/b/CS-apo", state="active",
        force=False, instance_ids={"old": "id-old"}, instance_databases={"old": "cs-old"},
        source_doc=DocFacts(uid="P12", title="apo", project_dir="/data/a/CS-apo", archived=False, detached=False,
                            deleted=False),
        current_dir=DirFacts("/data/a/CS-apo", True, False, "id-old", "P12", 10, 1000),
        desired_dir=DirFacts("/data/b/CS-apo", False))).actions
    backup = Action.create(address="database:cs-old", kind="backup", reason="due", facts={})
    ordered = resolve_dependencies([backup, *move])
    names = [action.kind for action in ordered]
    assert names.index("archive") < names.index("backup")
    assert ordered[names.index("backup")].depends_on == [move[0].id]
