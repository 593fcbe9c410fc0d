"""Host-scoped origins: a run on another host leaves a local_only origin to its own host's run,
and says so (never a silent "everything matches")."""

from __future__ import annotations

import pytest

from tests.integration.conftest import make_tree, tree

# What these tests check depends on the state database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.state_store

CONFIG = """\
[origins.o1]
root = "o1"
host = "exao1"
local_only = true
settle = "0s"

[replicas."r"]
"""


def test_a_local_only_origin_is_left_to_its_own_host_and_the_plan_says_so(site, monkeypatch):
    make_tree(site.root / "o1", {"telem/a.bin": "alpha"})
    (site.root / "r").mkdir()
    site.write(CONFIG)

    monkeypatch.setenv("RECONCILER_HOST", "exao2")
    plan = site.cli("plan", "--detailed-exitcode")
    assert plan.code == 0, plan.err  # nothing for this host to do...
    assert "not checked by this run on exao2: origin o1 is local_only on host exao1" in plan.out
    assert "no run there has read it yet" in plan.out
    assert "Everything matches" not in plan.out  # ...and it does not pretend all is in order
    assert site.cli("reconcile").code == 0
    assert tree(site.root / "r") == {}

    monkeypatch.setenv("RECONCILER_HOST", "exao1.lco.cl")
    assert site.cli("reconcile").code == 0
    assert tree(site.root / "r" / "o1") == tree(site.root / "o1")

    monkeypatch.setenv("RECONCILER_HOST", "exao2")
    plan = site.cli("plan")
    assert "a run there last read it at" in plan.out
