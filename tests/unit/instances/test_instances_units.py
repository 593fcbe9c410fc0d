"""The instances kind's pure parts: the cryosparcm command lines (no CryoSPARC runs here: they
are checked against the documented signatures), the Meteor password hash, and the migration's
path mapping. The planner (diff_instance: users, lanes and both migrations) is tested as data:
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
