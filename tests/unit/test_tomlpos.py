"""Positions of keys in TOML text: the basis of FILE:LINE:COL errors."""

from __future__ import annotations

from reconciler.config.tomlpos import parse_with_positions

TEXT = """\
# comment
top = 1
[origins.exao1]
root = "/opt"   # x
  include = ["a", "b"]
[replicas."/mnt/backup"]
retention = { keep_last = 3, keep_daily = 7 }
[[things]]
a = 1
[[things]]
b.c = 2
[origins.exao2.sub]
x = 1
"""


def test_positions_of_keys_tables_and_nested_values():
    document = parse_with_positions(TEXT)
    assert document.position(("top",)) == (2, 1)
    assert document.position(("origins",)) == (3, 1)
    assert document.position(("origins", "exao1")) == (3, 1)
    assert document.position(("origins", "exao1", "include")) == (5, 3)
    assert document.position(("replicas", "/mnt/backup")) == (6, 1)
    assert document.position(("replicas", "/mnt/backup", "retention", "keep_daily")) == (7, 30)
    assert document.position(("things", 0)) == (8, 1)
    assert document.position(("things", 1)) == (10, 1)
    assert document.position(("things", 1, "b", "c")) == (11, 1)
    assert document.position(("origins", "exao2", "sub", "x")) == (13, 1)


def test_missing_keys_fall_back_to_their_table():
    document = parse_with_positions(TEXT)
    assert document.position(("origins", "exao1", "missing")) == (3, 1)
    assert document.position(("nothing",)) == (1, 1)
