"""The instances kind's pure parts: the cryosparcm command lines (no CryoSPARC runs here: they
are checked against the documented signatures), the Meteor password hash, and the migration
planners. The users and lanes planner (diff_instance) is tested as data:
tests/data/planner/instances-*.toml."""

from __future__ import annotations

import hashlib

import pytest

from reconciler.providers.cryosparc import accounts, scheduler
from reconciler.providers.cryosparc.drivers import cryosparcm


def test_scheduler_command_lines_by_version():
    assert cryosparcm.remove_target_argv("cryosparcm", 4, "gpu1") == [
        "cryosparcm", "cli", "remove_scheduler_target_node('gpu1')"]
    assert cryosparcm.remove_target_argv("cryosparcm", 5, "gpu1") == ["cryosparcm", "worker", "disconnect", "gpu1"]
    assert cryosparcm.remove_lane_argv("cryosparcm", 4, "hpc") == ["cryosparcm", "cli", "remove_scheduler_lane('hpc')"]
    assert cryosparcm.remove_lane_argv("cryosparcm", 5, "hpc") == ["cryosparcm", "cluster", "remove", "hpc"]
    assert cryosparcm.cluster_connect_argv("cryosparcm", 4) == ["cryosparcm", "cluster", "connect"]
    worker = cryosparcm.worker_connect_argv("/opt/cryosparc_worker", 4, "cryosparcm", hostname="gpu1",
                                            master="csmaster", port=39000, lane="ws", new_lane=True,
                                            ssh_str="cryosparc@gpu1", ssd_path="/scratch", ssd_quota_mb=500000)
    assert worker == ["/opt/cryosparc_worker/bin/cryosparcw", "connect", "--worker", "gpu1", "--master", "csmaster",
                      "--port", "39000", "--ssdpath", "/scratch", "--ssdquota", "500000", "--lane", "ws",
                      "--newlane", "--sshstr", "cryosparc@gpu1"]
    v5 = cryosparcm.worker_connect_argv("/w", 5, "cryosparcm", hostname="g", master="m", port=1, lane="l",
                                        new_lane=False, ssh_str="u@g", ssd_path=None, ssd_quota_mb=None)
    assert v5[:3] == ["cryosparcm", "worker", "connect"] and "--nossd" in v5 and "--newlane" not in v5


def test_major_version_from_cryosparcm_status():
    assert cryosparcm.major_version("----\nCurrent cryoSPARC version: v4.6.2\n----") == 4
    assert cryosparcm.major_version("CryoSPARC version: v5.0.1") == 5
    with pytest.raises(ValueError):
        cryosparcm.major_version("master not running")


def test_meteor_password_is_bcrypt_over_the_hex_sha256():
    import bcrypt

    stored = accounts.meteor_password_hash("s3cret!", rounds=4)
    digest = hashlib.sha256(b"s3cret!").hexdigest().encode()
    assert bcrypt.checkpw(digest, stored.encode()) and not bcrypt.checkpw(b"s3cret!", stored.encode())
    assert accounts.meteor_password_matches("s3cret!", stored)


def test_meteor_ids_are_stable_and_in_meteors_alphabet():
    first = accounts.meteor_id("id-new\0a@x.org")
    assert first == accounts.meteor_id("id-new\0a@x.org") != accounts.meteor_id("id-old\0a@x.org")
    assert len(first) == 17 and set(first) <= set(accounts.METEOR_ID_ALPHABET)


def test_cluster_target_from_cluster_info():
    info = {"name": "x", "worker_bin_path": "/w/bin/cryosparcw", "qsub_cmd_tpl": "sbatch {{ script_path_abs }}",
            "qstat_cmd_tpl": "squeue", "qdel_cmd_tpl": "scancel", "qinfo_cmd_tpl": "sinfo",
            "send_cmd_tpl": "ssh login {{ command }}"}
    target = scheduler.cluster_target("hpc", info, "#!/bin/bash\n")
    assert (target["name"], target["lane"], target["type"], target["script_tpl"]) == ("hpc", "hpc", "cluster",
                                                                                      "#!/bin/bash\n")
    assert scheduler.status_command(target) == "ssh login sinfo"


def test_migrate_paths_move_the_longest_matching_prefix():
    from reconciler.kinds.instances.migration import new_path

    prefixes = {"/old": "/new", "/old/fast/": "/nvme"}
    assert new_path("/old/CS-a", prefixes) == "/new/CS-a"
    assert new_path("/old/fast/CS-b", prefixes) == "/nvme/CS-b"
    assert new_path("/older/CS-c", prefixes) == "/older/CS-c"
    assert new_path("/elsewhere/CS-d", {}) == "/elsewhere/CS-d"


def test_attach_migration_planner_assigns_next_free_uids_and_waits_for_busy_projects():
    from reconciler.kinds.instances.migration import MigratingProject, MigrationFacts, diff_migration

    facts = MigrationFacts(target="new", source="old", source_id="id-old", next_number=5,
                           prerequisites=["user:new/a@x.org"], users_to_merge=["z@x.org"], projects=[
                               MigratingProject(uid="P1", title="a", source_path="/o/a", path="/n/a", detached=False),
                               MigratingProject(uid="P2", title="b", source_path="/s/b", path="/s/b", detached=False,
                                                busy_jobs=["J3"]),
                               MigratingProject(uid="P3", title="c", source_path="/o/c", path="/n/c", detached=True,
                                                checkpoint={"detached": True, "copied": True}),
                               MigratingProject(uid="P4", title="d", source_path="/o/d", path="/n/d", detached=True),
                               MigratingProject(uid="P6", title="e", source_path="/o/e", path="/n/e", detached=False,
                                                imported_uid="P9")])
    diff = diff_migration(facts)
    steps = [(action.address, action.kind, action.details.get("new_uid")) for action in diff.actions]
    assert steps == [("user:new/z@x.org", "merge_user", None),
                     ("migration:new/P1", "migrate_detach", "P5"), ("migration:new/P1", "migrate_copy", "P5"),
                     ("migration:new/P1", "migrate_attach", "P5"), ("migration:new/P3", "migrate_attach", "P6")]
    assert set(diff.actions[1].depends_on) == {"user:new/a@x.org", "user:new/z@x.org"}
    notes = " ".join(note.message for note in diff.notes)
    assert "waiting: jobs J3 of P2" in notes and "P4 was detached from old before the migration" in notes
    assert "P1 -> P5 (/n/a" in notes and "P3 -> P6" in notes


def test_database_migration_planner_refuses_a_clash_and_an_outdated_copy():
    from reconciler.kinds.instances.database_migration import (
        DatabaseMigrationFacts,
        DatabaseProject,
        diff_database_migration,
    )

    projects = [DatabaseProject(uid="P1", source_path="/o/a", path="/n/a", archived=False, detached=False),
                DatabaseProject(uid="P2", source_path="/s/b", path="/s/b", archived=False, detached=False,
                                lock="id-old")]
    fresh = DatabaseMigrationFacts(target="new", source="old", source_id="id-old", target_id="id-new",
                                   projects=projects)
    kinds = [(action.address, action.kind) for action in diff_database_migration(fresh).actions]
    assert kinds == [("migration:new/P1", "migrate_archive"), ("migration:new/database", "copy_database"),
                     ("migration:new/P1", "migrate_copy"), ("migration:new/P1", "repoint"),
                     ("migration:new/P1", "migrate_unarchive"), ("migration:new/P2", "relock")]
    clash = DatabaseMigrationFacts(target="new", source="old", source_id="id-old", target_id="id-new",
                                   target_uids=["P1"], projects=projects)
    assert "uid clash" in diff_database_migration(clash).errors[0].message
    busy = DatabaseMigrationFacts(target="new", source="old", source_id="id-old", target_id="id-new",
                                  busy=["P1/J2"], projects=projects)
    assert diff_database_migration(busy).actions == []
    outdated = DatabaseMigrationFacts(target="new", source="old", source_id="id-old", target_id="id-new",
                                      copy_started="2026-01-01T00:00:00+00:00", copy_done=True,
                                      newer="P2 (/s/b, records changed 2026-01-02 00:00:00Z)", projects=projects)
    refused = diff_database_migration(outdated)
    assert refused.actions == [] and "refusing to go on" in refused.errors[0].message


def test_a_cryosparcm_source_is_put_in_maintenance_mode_before_anything_of_alternative_a():
    from reconciler.kinds.instances.database_migration import (
        DatabaseMigrationFacts,
        DatabaseProject,
        diff_database_migration,
    )

    projects = [DatabaseProject(uid="P1", source_path="/o/a", path="/n/a", archived=False, detached=False)]
    off = DatabaseMigrationFacts(target="new", source="old", source_id="id-old", target_id="id-new",
                                 maintenance=False, projects=projects)
    actions = diff_database_migration(off).actions
    assert [action.kind for action in actions[:3]] == ["maintenance_on", "migrate_archive", "copy_database"]
    assert actions[0].id in actions[1].depends_on and actions[0].id in actions[2].depends_on
    on = DatabaseMigrationFacts(target="new", source="old", source_id="id-old", target_id="id-new",
                                maintenance=True, projects=projects)
    assert "maintenance_on" not in {action.kind for action in diff_database_migration(on).actions}
    busy = DatabaseMigrationFacts(target="new", source="old", source_id="id-old", target_id="id-new",
                                  maintenance=False, busy=["P1/J3"], projects=projects)
    plan = diff_database_migration(busy)
    assert [action.kind for action in plan.actions] == ["maintenance_on"]
    assert "P1/J3" in plan.notes[0].message and "queued jobs never start" in plan.notes[0].message
    broken = DatabaseMigrationFacts(target="new", source="old", source_id="id-old", target_id="id-new",
                                    maintenance_error="cryosparcm: not found", projects=projects)
    assert diff_database_migration(broken).actions == [] and "maintenance mode" in \
        diff_database_migration(broken).errors[0].message


def test_maintenance_mode_command_lines_are_the_documented_ones():
    import pytest

    from reconciler.providers.cryosparc.drivers import cryosparcm

    assert cryosparcm.maintenance_argv("/cs/bin/cryosparcm", "on") == ["/cs/bin/cryosparcm", "maintenancemode", "on"]
    assert cryosparcm.maintenance_argv("cryosparcm", "status") == ["cryosparcm", "maintenancemode", "status"]
    assert cryosparcm.maintenance_is_on("Maintenance mode is currently ON\n")
    assert not cryosparcm.maintenance_is_on("Maintenance mode is currently OFF")
    with pytest.raises(ValueError):
        cryosparcm.maintenance_is_on("command not found")
    with pytest.raises(ValueError):
        cryosparcm.maintenance_argv("cryosparcm", "maybe")
