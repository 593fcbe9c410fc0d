"""Plan / apply semantics of the engine, proven with the test-only toy kind."""

from __future__ import annotations

import json

import pytest

from reconciler.state.journal import entries
from reconciler.state.store import StateStore


def test_plan_shows_actions_and_detailed_exitcode_goes_2_then_0(workspace):
    workspace.write_config({"a": {"content": "alpha"}, "b": {"content": "beta"}})
    plan = workspace.cli("plan", "--detailed-exitcode")
    assert plan.code == 2, plan
    assert "# toy:a" in plan.out and "# toy:b" in plan.out
    assert plan.out.strip().endswith("Plan: 2 write (9 B).")
    assert workspace.files() == {}  # plan never changes the world

    applied = workspace.cli("apply", "--auto-approve")
    assert applied.code == 0, applied
    assert "Apply complete: 2 succeeded." in applied.out
    assert workspace.files() == {"a": "alpha", "b": "beta"}

    again = workspace.cli("plan", "--detailed-exitcode")
    assert again.code == 0, again
    assert "No changes. Everything matches the configuration." in again.out


def test_saved_plan_is_refused_when_the_world_changed(workspace, tmp_path):
    workspace.write_config({"a": {"content": "alpha"}})
    (workspace.world / "a").write_text("old")
    plan_file = tmp_path / "p.json"
    assert workspace.cli("plan", "-o", str(plan_file)).code == 0
    (workspace.world / "a").write_text("changed meanwhile")

    refused = workspace.cli("apply", str(plan_file))
    assert refused.code == 1
    assert "Saved plan is stale" in refused.err and "toy:a" in refused.err and "run plan again" in refused.err
    assert "Traceback" not in refused.err
    assert (workspace.world / "a").read_text() == "changed meanwhile"


def test_saved_plan_is_refused_when_the_config_changed(workspace, tmp_path):
    workspace.write_config({"a": {"content": "alpha"}})
    plan_file = tmp_path / "p.json"
    workspace.cli("plan", "-o", str(plan_file))
    workspace.write_config({"a": {"content": "alpha"}, "b": {"content": "beta"}})
    refused = workspace.cli("apply", str(plan_file))
    assert refused.code == 1 and "the config file changed" in refused.err
    assert workspace.files() == {}


@pytest.mark.state_store
def test_saved_plan_applies_exactly_once(workspace, tmp_path):
    workspace.write_config({"a": {"content": "alpha"}})
    plan_file = tmp_path / "p.json"
    workspace.cli("plan", "-o", str(plan_file))
    shown = workspace.cli("show", str(plan_file))
    assert shown.code == 0 and "# toy:a" in shown.out and "stale" not in shown.err

    first = workspace.cli("apply", str(plan_file))
    assert first.code == 0, first
    assert workspace.files() == {"a": "alpha"}
    second = workspace.cli("apply", str(plan_file))
    assert second.code == 1 and "already applied" in second.err

    stale_show = workspace.cli("show", str(plan_file))
    assert stale_show.code == 0 and "Warning: this plan is stale" in stale_show.err


def test_saved_plan_with_no_actions_is_not_applied(workspace, tmp_path):
    workspace.write_config({})
    plan_file = tmp_path / "p.json"
    workspace.cli("plan", "-o", str(plan_file))
    result = workspace.cli("apply", str(plan_file))
    assert result.code == 0 and "Nothing to do" in result.out


def test_plan_file_is_the_documented_json(workspace, tmp_path):
    workspace.write_config({"a": {"content": "alpha"}})
    (workspace.world / "stray").write_text("x")
    plan_file = tmp_path / "p.json"
    workspace.cli("plan", "-o", str(plan_file))
    data = json.loads(plan_file.read_text())
    assert data["format_version"] == 1
    assert set(data) >= {"format_version", "tool_version", "created_at", "config_sha256", "applyable",
                         "actions", "summary"}
    assert data["summary"] == {"write": 1, "remove": 1, "destructive": 1}
    kinds = {action["kind"]: action for action in data["actions"]}
    assert kinds["remove"]["destructive"] is True and kinds["write"]["destructive"] is False
    for action in data["actions"]:
        assert set(action) >= {"id", "address", "kind", "destructive", "reason", "precondition", "details"}
        assert len(action["precondition"]) == 64
    as_stdout = workspace.cli("plan", "--format", "json")
    assert json.loads(as_stdout.out)["actions"][0]["id"] == data["actions"][0]["id"]  # ids are stable


def test_markdown_plan_is_fit_for_a_pull_request(workspace):
    workspace.write_config({"a": {"content": "alpha"}})
    (workspace.world / "stray").write_text("x")
    markdown = workspace.cli("plan", "--format", "markdown").out
    assert markdown.index("| action | count |") < markdown.index("<details>")
    assert "| `remove` | 1 |" in markdown and "**yes**" in markdown
    assert "`toy:stray` (remove)" in markdown


def test_destructive_actions_wait_for_allow_destroy(workspace):
    workspace.write_config({"a": {"content": "alpha"}})
    (workspace.world / "stray").write_text("precious?")
    plan = workspace.cli("plan")
    assert "- remove (destructive): not declared in the config" in plan.out
    assert "Destructive (need --allow-destroy): toy:stray (remove)." in plan.out
    assert plan.out.strip().endswith("Plan: 1 write (5 B), 1 remove (destructive).")

    applied = workspace.cli("apply", "--auto-approve")
    assert applied.code == 0
    assert "Pending destructive (run with --allow-destroy): toy:stray (remove)" in applied.out
    assert workspace.files() == {"a": "alpha", "stray": "precious?"}

    assert workspace.cli("reconcile").code == 2
    assert workspace.cli("reconcile", "--allow-destroy").code == 0
    assert workspace.files() == {"a": "alpha"}
    assert workspace.cli("reconcile").code == 0


def test_an_empty_desired_set_never_deletes_everything(workspace):
    workspace.write_config({})
    (workspace.world / "one").write_text("1")
    (workspace.world / "two").write_text("2")
    plan = workspace.cli("plan")
    assert plan.code == 1
    assert "refusing 2 destructive action(s): the config declares no toy at all" in plan.out
    result = workspace.cli("reconcile", "--allow-destroy")
    assert result.code == 1
    assert workspace.files() == {"one": "1", "two": "2"}


@pytest.mark.state_store
def test_dependencies_run_first_and_failures_stop_only_dependants(workspace):
    workspace.write_config({
        "base": {"content": "b", "fail": True},
        "top": {"content": "t", "after": ["base"]},
        "lone": {"content": "l"},
        "first": {"content": "f"},
        "second": {"content": "s", "after": ["first"]},
    })
    # order in the config puts dependants before what they depend on elsewhere:
    plan = workspace.cli("plan").out
    assert plan.index("# toy:base") < plan.index("# toy:top")
    result = workspace.cli("apply", "--auto-approve")
    assert result.code == 1
    assert "Failed: toy:base (write): toy:base: told to fail" in result.out
    assert "Skipped: toy:top (write)" in result.out
    assert "Apply complete: 3 succeeded, 1 failed, 1 skipped." in result.out
    assert workspace.files() == {"first": "f", "lone": "l", "second": "s"}

    store = StateStore(workspace.state_url)
    statuses = {(entry.address, entry.status) for entry in entries(store)}
    store.dispose()
    assert ("toy:base", "failed") in statuses and ("toy:top", "skipped") in statuses
    assert ("toy:lone", "succeeded") in statuses


def test_targets_limit_the_plan_and_keep_dependencies(workspace):
    workspace.write_config({"a": {"content": "1"}, "b": {"content": "2", "after": ["a"]}, "c": {"content": "3"}})
    plan = workspace.cli("plan", "--target", "toy:b")
    assert "Warning: the plan is limited to toy:b" in plan.out
    assert "# toy:a" in plan.out and "# toy:b" in plan.out and "# toy:c" not in plan.out
    assert workspace.cli("apply", "--auto-approve", "--target", "toy:b").code == 0
    assert workspace.files() == {"a": "1", "b": "2"}
    assert workspace.cli("apply", "--auto-approve", "--target", "toy:*").code == 0
    assert workspace.files() == {"a": "1", "b": "2", "c": "3"}


def test_an_address_that_cannot_be_observed_fails_alone(workspace):
    workspace.write_config({"good": {"content": "g"}, "bad": {"content": "b"}})
    (workspace.world / "bad").mkdir()
    result = workspace.cli("reconcile")
    assert result.code == 1
    assert "toy:bad: " in result.err and "is a directory" in result.err
    assert workspace.files()["good"] == "g"


def test_apply_without_a_terminal_needs_auto_approve(workspace):
    workspace.write_config({"a": {"content": "alpha"}})
    result = workspace.run("apply")
    assert result.code == 1
    assert "pass --auto-approve" in result.err
    assert workspace.files() == {}


@pytest.mark.state_store
def test_history_lists_the_journal(workspace):
    workspace.write_config({"a": {"content": "alpha"}})
    workspace.cli("apply", "--auto-approve")
    shown = workspace.cli("history", "--json")
    rows = json.loads(shown.out)
    assert [(row["address"], row["status"]) for row in rows] == [("toy:a", "succeeded")]


def _apply_on_a_terminal(workspace, answer: bytes) -> tuple[int, bytes]:
    import os
    import pty
    import sys

    from tests.conftest import REPO
    from tests.engine.conftest import TOY_PLUGIN

    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update({"PYTHONPATH": str(REPO), "RECONCILER_PLUGINS": TOY_PLUGIN})
        os.execv(sys.executable, [sys.executable, "-m", "reconciler", *workspace.args("apply")])
    output = b""
    answered = False
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if not answered and b"Apply these 1 action(s)?" in output:
            os.write(fd, answer + b"\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output


def test_apply_on_a_terminal_asks_first(workspace):
    workspace.write_config({"a": {"content": "alpha"}})
    code, output = _apply_on_a_terminal(workspace, b"n")
    assert b"# toy:a" in output and b"Apply cancelled." in output and code == 0
    assert workspace.files() == {}
    code, output = _apply_on_a_terminal(workspace, b"y")
    assert code == 0 and b"Apply complete: 1 succeeded." in output
    assert workspace.files() == {"a": "alpha"}


def test_a_target_that_matches_nothing_is_an_error_naming_the_closest_address(workspace):
    workspace.write_config({"alpha": {"content": "a"}})
    (workspace.world / "stray").write_text("x")
    typo = workspace.cli("plan", "--target", "toy:alhpa")
    assert typo.code == 1 and "--target 'toy:alhpa' matches no address; did you mean 'toy:alpha'?" in typo.err
    assert workspace.cli("apply", "--auto-approve", "--target", "toy:alhpa").code == 1
    assert workspace.files() == {"stray": "x"}
    # an address only the world has (a file to remove) is a fine target
    assert "remove" in workspace.cli("plan", "--target", "toy:stray").out
    assert workspace.cli("plan", "--target", "toy:*").code == 0
