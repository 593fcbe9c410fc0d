"""validate, fmt, init, schema: the config file's commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from reconciler.cli.app import App
from reconciler.cli.config_commands import config_schema, starter_names
from tests.conftest import REPO

THREE_MISTAKES = """\
[toy]
dri = "world"

[toy.files.a]
content = "x"
slow = "5 minutes"
fail = "sometimes"
"""


def test_validate_reports_every_mistake_with_its_position(workspace):
    workspace.config.write_text(THREE_MISTAKES)
    result = workspace.cli("validate")
    assert result.code == 1
    lines = result.err.strip().splitlines()
    path = str(workspace.config)
    # [toy] lacks its required `dir`, which the misspelt `dri` was meant to be: four problems in all.
    assert lines == [
        f"{path}:1:1: [toy] is missing the required key 'dir'",
        f"{path}:2:1: unknown key 'dri' in [toy]; did you mean 'dir'?",
        f"{path}:6:1: toy.files.a.slow = '5 minutes': invalid duration '5 minutes': write a number and a unit, "
        'one of s, m, h, d, w (e.g. "90s", "15m", "1d")',
        f"{path}:7:1: toy.files.a.fail = 'sometimes': write true or false (a TOML boolean, without quotes)",
    ]


def test_validate_three_mistakes_give_three_lines(workspace):
    workspace.config.write_text('[toy]\ndir = "world"\nfiels = {}\n\n[toy.files.a]\nslow = "1 fortnight"\n'
                                'max_size = [1]\n')
    result = workspace.cli("validate")
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith(":3:1: unknown key 'fiels' in [toy]; did you mean 'files'?")
    assert ":6:1: toy.files.a.slow = '1 fortnight': invalid duration" in lines[1]
    assert ":7:1: toy.files.a.max_size" in lines[2]


def test_a_toml_syntax_error_is_located(workspace):
    workspace.config.write_text('[toy]\ndir = "world"\ncontent = "unterminated\n')
    result = workspace.cli("validate")
    assert result.code == 1
    assert result.err.startswith(f"{workspace.config}:3:")
    assert "TOML syntax error" in result.err and "Traceback" not in result.err


def test_cross_reference_errors_are_located(workspace):
    workspace.write_config({"a": {"content": "1", "after": ["nope"]}})
    result = workspace.cli("validate")
    assert result.code == 1
    assert result.err.strip() == f"{workspace.config}:6:1: toy file 'a' comes after unknown 'nope'"


def test_unknown_top_level_section_suggests_the_right_one(workspace):
    workspace.config.write_text('[toi]\ndir = "world"\n')
    result = workspace.cli("validate")
    assert f"{workspace.config}:1:1: unknown key 'toi'; did you mean 'toy'?" in result.err


def test_missing_config_file_says_how_to_make_one(workspace):
    workspace.config.unlink(missing_ok=True)
    result = workspace.cli("plan")
    assert result.code == 1
    assert result.err.strip() == (f"Error: {workspace.config}: no such config file; create one with "
                                  "`reconciler init` or name another with --config")


def test_config_is_found_through_the_environment_then_the_current_directory(workspace, monkeypatch):
    workspace.write_config({})
    monkeypatch.setenv("RECONCILER_CONFIG", str(workspace.config))
    monkeypatch.chdir(workspace.root.parent)
    from reconciler.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["--state", workspace.state_url, "validate"])
    assert exit_.value.code == 0
    monkeypatch.delenv("RECONCILER_CONFIG")
    monkeypatch.chdir(workspace.root)
    with pytest.raises(SystemExit) as exit_:
        main(["--state", workspace.state_url, "validate"])
    assert exit_.value.code == 0


def test_fmt_normalises_and_keeps_comments(workspace):
    messy = "# managed by the lab\n[toy]\n  dir='world'   # where\n\n\n\n[toy.files.a]\ncontent=\"x\"\n"
    workspace.config.write_text(messy)
    check = workspace.cli("fmt", "--check")
    assert check.code == 1 and "not formatted" in check.err
    assert workspace.config.read_text() == messy  # --check changes nothing
    assert workspace.cli("fmt").code == 0
    assert workspace.config.read_text() == (
        '# managed by the lab\n[toy]\ndir = "world"   # where\n\n[toy.files.a]\ncontent = "x"\n'
    )
    assert workspace.cli("fmt", "--check").code == 0
    assert workspace.cli("validate").code == 0


def test_init_writes_a_valid_starter_and_never_overwrites(workspace):
    workspace.config.unlink(missing_ok=True)
    assert workspace.cli("init").code == 0
    assert "reconciler plan" in workspace.config.read_text()
    assert workspace.cli("validate").code == 0
    again = workspace.cli("init")
    assert again.code == 1 and "already exists; pass --force" in again.err
    wrong = workspace.cli("init", "--force", "--example", "nope")
    assert wrong.code == 1 and "choose one of" in wrong.err


@pytest.mark.parametrize("name", starter_names())
def test_every_starter_validates(tmp_path, name):
    from reconciler.cli.config_commands import starter_text
    from reconciler.config.loader import load_config
    from reconciler.engine.registry import load_kinds

    path = tmp_path / "reconciler.toml"
    path.write_text(starter_text(name))
    load_config(path, load_kinds(include_plugins=False))


def test_committed_schema_is_up_to_date(monkeypatch):
    monkeypatch.delenv("RECONCILER_PLUGINS", raising=False)
    committed = json.loads((REPO / "schemas" / "reconciler.schema.json").read_text())
    assert committed == config_schema(App()), "run: reconciler schema -o reconciler/config/reconciler.schema.json"



def test_every_default_in_the_schema_is_valid_against_its_own_field(monkeypatch):
    """An editor fills in a default from the schema: a duration's must be "1d", never
    pydantic's ISO "P1D", which the duration's pattern refuses."""
    import re

    monkeypatch.delenv("RECONCILER_PLUGINS", raising=False)
    found = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("default"), str) and "pattern" in node:
                found.append((node["default"], node["pattern"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config_schema(App()))
    assert len(found) >= 5 and ("1w", r"^\s*(\d+(\.\d+)?\s*[smhdw]\s*)+$") in found
    assert [default for default, pattern in found if not re.search(pattern, default)] == []

def test_schema_validates_the_examples(monkeypatch):
    import jsonschema
    import tomlkit

    schema = json.loads((REPO / "schemas" / "reconciler.schema.json").read_text())
    examples = sorted((REPO / "examples").glob("*.toml"))
    for example in examples:
        jsonschema.validate(tomlkit.parse(example.read_text()).unwrap(), schema)


def test_every_example_validates(monkeypatch):
    monkeypatch.delenv("RECONCILER_PLUGINS", raising=False)
    from reconciler.config.loader import load_config
    from reconciler.engine.registry import load_kinds

    for example in sorted((REPO / "examples").glob("*.toml")):
        load_config(Path(example), load_kinds(include_plugins=False))


@pytest.mark.parametrize(("text", "expected", "commands"), [
    ('[toy]\ndir = "a"\ndir = "b"\n', ':3:10: TOML syntax error: Key "dir" already exists.', 2),
    ('[toy]\ndir = "a"\n[toy]\ncontent = "x"\n', ':3:5: TOML syntax error: Key "toy" already exists.', 2),
    ('[toy]\ndir = "a\n', ":2:9: TOML syntax error: ", 2),
    ('[toy]\ndir = "a"\n[toy.files.a]\nslow = "1000000000d"\n',
     ":4:1: toy.files.a.slow = '1000000000d': duration '1000000000d' is longer than 100 years; "
     'write at most "36500d"', 1),
    ('[toy]\ndir = "a"\n[toy.files.a]\nslow = "' + "9" * 40 + 'w"\n', ":4:1: toy.files.a.slow = ", 1),
])
def test_bad_input_is_one_located_line_never_an_internal_error(workspace, text, expected, commands):
    workspace.config.write_text(text)
    for command in [("validate",), ("fmt", "--check")][:commands]:
        result = workspace.cli(*command)
        assert result.code == 1, result
        assert "internal error" not in result.err and expected in result.err, result.err
        assert len(result.err.strip().splitlines()) == 1


def test_values_are_taken_as_toml_typed_them(workspace):
    workspace.write_config({}, extra='\n[origins.o]\nroot = "src"\nimmutable = "yes"\nscan_jobs = "2"\n')
    result = workspace.cli("validate")
    assert result.code == 1
    assert "origins.o.immutable = 'yes': write true or false (a TOML boolean, without quotes)" in result.err
    assert "origins.o.scan_jobs = '2': write a whole number (without quotes)" in result.err


def test_committed_config_reference_is_up_to_date(monkeypatch):
    from reconciler.config.reference import render_reference

    monkeypatch.delenv("RECONCILER_PLUGINS", raising=False)
    expected = render_reference(config_schema(App()))
    committed = (REPO / "docs" / "reference" / "config.md").read_text()
    assert committed == expected, "run: reconciler schema --format markdown -o docs/reference/config.md"


def test_every_config_key_says_what_it_does(monkeypatch):
    from reconciler.config.reference import undescribed

    monkeypatch.delenv("RECONCILER_PLUGINS", raising=False)
    assert undescribed(config_schema(App())) == []


@pytest.mark.parametrize("name", starter_names())
def test_what_init_writes_is_formatted_and_names_the_installed_schema(tmp_path, capsys, name):
    from tests.conftest import invoke_cli

    config = tmp_path / "reconciler.toml"
    assert invoke_cli(["--config", str(config), "init", "--example", name], capsys).code == 0
    first = config.read_text().splitlines()[0]
    assert first.startswith("#:schema file://") and first.endswith("/reconciler/config/reconciler.schema.json")
    assert Path(first.removeprefix("#:schema file://")).is_file()
    checked = invoke_cli(["--config", str(config), "fmt", "--check"], capsys)
    assert checked.code == 0 and "already formatted" in checked.err


def test_init_with_an_origin_and_a_replica_makes_a_config_that_copies(tmp_path, capsys):
    from tests.conftest import invoke_cli

    (tmp_path / "instrument").mkdir()
    (tmp_path / "instrument" / "frame.fits").write_text("x")
    os.utime(tmp_path / "instrument" / "frame.fits", (1, 1))
    (tmp_path / "backup disk").mkdir()
    config = tmp_path / "reconciler.toml"
    made = invoke_cli(["--config", str(config), "init", "--origin", str(tmp_path / "instrument"),
                       "--replica", "backup disk"], capsys)
    assert made.code == 0, made.err
    plan = invoke_cli(["--config", str(config), "plan"], capsys)
    assert plan.code == 0 and "Plan: 1 copy (1 files" in plan.out, plan.out
    half = invoke_cli(["--config", str(config), "init", "--force", "--origin", "x"], capsys)
    assert half.code == 1 and "give --origin and --replica together" in half.err


def test_init_list_says_what_each_starter_is_for(workspace):
    listed = workspace.cli("init", "--list").out.splitlines()
    assert [line.split()[0] for line in listed] == starter_names()
    assert all(len(line.split(maxsplit=1)) == 2 for line in listed)


def test_fmt_diff_only_shows(workspace):
    workspace.config.write_text('[toy]\ndir="world"\n')
    shown = workspace.cli("fmt", "--diff")
    assert shown.code == 0 and '+dir = "world"' in shown.out
    assert workspace.config.read_text() == '[toy]\ndir="world"\n'
    assert workspace.cli("fmt").code == 0 and workspace.config.read_text() == '[toy]\ndir = "world"\n'
    again = workspace.cli("fmt")
    assert again.code == 0 and "already formatted" in again.err


def test_field_errors_and_cross_reference_errors_come_in_one_run(tmp_path, capsys):
    """As the README shows: a bad duration in one section and an unknown origin in another are
    reported together (a kind whose own sections are broken skips its cross-checks)."""
    from tests.conftest import invoke_cli

    (tmp_path / "src").mkdir()
    (tmp_path / "disk").mkdir()
    config = tmp_path / "reconciler.toml"
    config.write_text('[origins.exao1]\nroot = "src"\n\n[replicas."disk"]\norigins = ["exao3"]\n\n'
                      '[databases.x]\nuri = "mongodb://h"\ndatabase = "x"\nconnect_timeout = "2 minutes"\n')
    result = invoke_cli(["--config", str(config), "validate"], capsys)
    lines = result.err.strip().splitlines()
    assert result.code == 1 and len(lines) == 2, result.err
    assert lines[0].endswith(":5:1: replica 'disk' names unknown origin 'exao3' (origins: exao1)")
    assert ":10:1: databases.x.connect_timeout = '2 minutes': invalid duration" in lines[1]
