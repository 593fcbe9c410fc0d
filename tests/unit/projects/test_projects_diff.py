"""The projects planner is pure: facts in, ordered steps out."""

from __future__ import annotations

from dataclasses import replace

from reconciler.engine.ordering import resolve_dependencies
from reconciler.kinds.projects.diff import DirFacts, DocFacts, ProjectFacts, diff_project

IDS = {"old": "id-old", "new": "id-new"}
DATABASES = {"old": "cs-old", "new": "cs-new"}


def doc(**changes: object) -> DocFacts:
    base = DocFacts(uid="P12", title="apo", project_dir="/data/a/CS-apo", archived=False, detached=False,
                    deleted=False)
    return replace(base, **changes)  # type: ignore[arg-type]


def facts(**changes: object) -> ProjectFacts:
    base = ProjectFacts(
        name="apo", uid="P12", source_instance="old", instance="old", path="/data/a/CS-apo", state="active",
        force=False, instance_ids=IDS, instance_databases=DATABASES, source_doc=doc(),
        current_dir=DirFacts("/data/a/CS-apo", True, False, "id-old", "P12", 10, 1000),
        desired_dir=DirFacts("/data/a/CS-apo", True, False, "id-old", "P12"))
    return replace(base, **changes)  # type: ignore[arg-type]


def kinds(project: ProjectFacts) -> list[str]:
    return [action.kind for action in diff_project(project).actions]


def test_nothing_to_do_when_the_project_is_where_and_how_it_is_declared() -> None:
    diff = diff_project(facts())
    assert diff.actions == [] and diff.errors == [] and diff.notes == []


def test_path_change_archives_copies_points_unarchives_then_removes_the_old_directory() -> None:
    project = facts(path="/data/b/CS-apo", desired_dir=DirFacts("/data/b/CS-apo", False))
    actions = diff_project(project).actions
    assert [a.kind for a in actions] == ["archive", "copy", "update_path", "unarchive", "remove_old"]
    assert [a.destructive for a in actions] == [False, False, False, False, True]
    for earlier, later in zip(actions, actions[1:], strict=False):
        assert later.depends_on == [earlier.id]
    assert actions[0].before == ["database:cs-old"]
    assert actions[1].details == {"source": "/data/a/CS-apo", "destination": "/data/b/CS-apo", "file_count": 10,
                                  "bytes": 1000}
    assert actions[4].details == {"path": "/data/a/CS-apo", "copy": "/data/b/CS-apo"}


def test_archive_runs_before_a_backup_of_the_instance_database_in_the_same_plan() -> None:
    from reconciler.engine.actions import Action

    move = diff_project(facts(path="/data/b/CS-apo", desired_dir=DirFacts("/data/b/CS-apo", False))).actions
    backup = Action.create(address="database:cs-old", kind="backup", reason="due", facts={})
    ordered = resolve_dependencies([backup, *move])
    names = [action.kind for action in ordered]
    assert names.index("archive") < names.index("backup")
    assert ordered[names.index("backup")].depends_on == [move[0].id]


def test_an_archived_project_that_moves_and_stays_archived_is_not_archived_again() -> None:
    project = facts(path="/data/b/CS-apo", state="archived", source_doc=doc(archived=True),
                    desired_dir=DirFacts("/data/b/CS-apo", False))
    assert kinds(project) == ["copy", "update_path", "remove_old"]


def test_state_changes_alone() -> None:
    assert kinds(facts(state="archived")) == ["archive"]
    assert kinds(facts(source_doc=doc(archived=True))) == ["unarchive"]
    assert kinds(facts(state="detached")) == ["detach"]
    detached = facts(source_doc=doc(detached=True), current_dir=DirFacts("/data/a/CS-apo", True, False, None, "P12"))
    assert kinds(detached) == ["attach"]
    assert kinds(replace(detached, state="archived")) == ["attach", "archive"]
    assert kinds(replace(detached, state="detached")) == []


def test_busy_jobs_make_the_project_wait_with_a_note() -> None:
    diff = diff_project(facts(state="archived", source_doc=doc(busy_jobs=["J5", "J7"])))
    assert diff.actions == []
    assert "waiting: jobs J5, J7 of P12 on old are queued or running" in diff.notes[0].message


def test_migration_detaches_copies_and_attaches_under_the_same_uid_when_free() -> None:
    project = facts(instance="new", path="/data/new/CS-apo", target_uid="P12",
                    desired_dir=DirFacts("/data/new/CS-apo", False))
    actions = diff_project(project).actions
    assert [a.kind for a in actions] == ["detach", "copy", "attach", "remove_old"]
    assert actions[0].details == {"instance": "old", "uid": "P12"}
    attach = actions[2].details
    assert attach["instance"] == "new" and attach["uid"] == "P12"
    assert attach["imported_from"] == {"instance_id": "id-old", "uid": "P12"}


def test_migration_onto_a_taken_uid_says_which_uid_the_project_gets() -> None:
    project = facts(instance="new", path="/data/new/CS-apo", target_uid="P40",
                    desired_dir=DirFacts("/data/new/CS-apo", False))
    attach = [a for a in diff_project(project).actions if a.kind == "attach"][0]
    assert attach.details["uid"] == "P40"
    assert "as P40 (P12 is taken there)" in attach.reason


def test_a_finished_migration_is_managed_on_the_target() -> None:
    arrived = doc(uid="P40", project_dir="/data/new/CS-apo")
    project = facts(instance="new", path="/data/new/CS-apo", source_doc=doc(detached=True), target_doc=arrived,
                    current_dir=DirFacts("/data/new/CS-apo", True, False, "id-new", "P40"),
                    desired_dir=DirFacts("/data/new/CS-apo", True, False, "id-new", "P40"))
    assert kinds(project) == []
    archived = diff_project(replace(project, state="archived")).actions
    assert [a.kind for a in archived] == ["archive"]
    assert archived[0].details == {"instance": "new", "uid": "P40"}
    assert archived[0].before == ["database:cs-new"]


def test_an_interrupted_attach_is_planned_again_under_the_uid_it_took() -> None:
    partial = doc(uid="P40", project_dir="/data/new/CS-apo", attaching=True, detached=True)
    project = facts(instance="new", path="/data/new/CS-apo", source_doc=doc(detached=True), target_doc=partial,
                    target_uid="P40", current_dir=DirFacts("/data/a/CS-apo", True, False, None, "P12"),
                    desired_dir=DirFacts("/data/new/CS-apo", True, False, "id-new", "P40"), copy_started=True)
    assert kinds(project) == ["copy", "attach", "remove_old"]


def test_a_lock_of_another_instance_is_refused_unless_forced() -> None:
    foreign = facts(source_doc=doc(detached=True),
                    current_dir=DirFacts("/data/a/CS-apo", True, False, "id-elsewhere", "P12"))
    diff = diff_project(foreign)
    assert diff.actions == []
    assert "cs.lock belongs to instance id-elsewhere" in diff.errors[0].message
    assert "force = true" in diff.errors[0].message
    assert kinds(replace(foreign, force=True)) == ["attach"]


def test_a_destination_holding_other_data_is_refused() -> None:
    project = facts(path="/data/b/CS-apo", desired_dir=DirFacts("/data/b/CS-apo", True, False, None, None))
    diff = diff_project(project)
    assert diff.actions == [] and "already exists and holds other data" in diff.errors[0].message
    resumed = replace(project, copy_started=True)
    assert kinds(resumed)[:2] == ["archive", "copy"]


def test_a_path_inside_the_current_directory_is_refused() -> None:
    diff = diff_project(facts(path="/data/a/CS-apo/inner", desired_dir=DirFacts("/data/a/CS-apo/inner", False)))
    assert diff.actions == [] and "contain one another" in diff.errors[0].message


def test_a_missing_project_is_an_error_for_its_address_only() -> None:
    diff = diff_project(facts(source_doc=None, current_dir=None))
    assert diff.errors[0].address == "project:apo"
    assert "no project P12 on instance old" in diff.errors[0].message


def test_leftover_old_directories_of_earlier_moves_are_removed_when_verified() -> None:
    project = facts(leftovers=["/data/old/CS-apo"])
    actions = diff_project(project).actions
    assert [(a.kind, a.destructive, a.details["path"]) for a in actions] == [
        ("remove_old", True, "/data/old/CS-apo")]


def test_same_facts_give_the_same_action_ids() -> None:
    project = facts(path="/data/b/CS-apo", desired_dir=DirFacts("/data/b/CS-apo", False))
    assert [a.id for a in diff_project(project).actions] == [a.id for a in diff_project(project).actions]
