"""Action ids and preconditions hash canonical JSON; the fast path must give the same bytes."""

from __future__ import annotations

import hashlib
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.engine import actions
from reconciler.engine.actions import _ENCODER, sha256_of

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=12) | st.dictionaries(st.text(max_size=5), children, max_size=6),
    max_leaves=60,
)


def reference(value) -> str:
    return hashlib.sha256(_ENCODER.encode(value).encode("utf-8")).hexdigest()


@settings(max_examples=300)
@given(values)
def test_sha256_of_is_the_hash_of_the_canonical_json(value):
    assert sha256_of(value) == reference(value)
    with patch.object(actions, "_LIST_CHUNK", 2):  # every list of 3+ items encoded in pieces
        assert sha256_of(value) == reference(value)


def test_long_lists_are_encoded_in_chunks_with_the_same_result(monkeypatch):
    monkeypatch.setattr(actions, "_LIST_CHUNK", 3)
    for value in ([], [1], list(range(7)), {"files": [f"d/ü{i}" for i in range(10)], "n": {"x": list(range(4))}},
                  [[1, 2, 3, 4], {"b": 1, "a": [5, 6, 7, 8]}], (1, 2, 3, 4, 5)):
        assert sha256_of(value) == reference(value)
    big = {"details": {"files": [f"telem/f{i:06d}.bin" for i in range(20_000)], "bytes": 7}, "kind": "copy"}
    assert sha256_of(big) == reference(big)
