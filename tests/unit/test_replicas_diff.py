"""The replicas planner is pure: tested over random inventories, no files, no rsync."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.kinds.replicas.diff import SECOND, PairFacts, ReplicaFacts, copy_precondition, diff_replicas
from reconciler.kinds.replicas.inventory import Candidate, CandidateSet, Unrecorded

NOW = 1_800_000_000 * SECOND
SETTLE = 120 * SECOND

names = st.text(alphabet="abcxyz/_-. é\n", min_size=1, max_size=12).filter(lambda name: not name.startswith("/"))


@st.composite
def pairs(draw):
    paths = sorted(draw(st.sets(names, max_size=40)))
    candidates = [Candidate(path, draw(st.integers(0, 10**9)), NOW - draw(st.integers(0, 600)) * SECOND,
                            draw(st.booleans())) for path in paths]
    drift = {c.path for c in candidates if c.recorded is False and draw(st.booleans())}
    listed = draw(st.booleans())
    unrecorded = None
    if listed:
        unrecorded = []
        for candidate in candidates:
            if draw(st.booleans()):
                same = draw(st.booleans())
                unrecorded.append(Unrecorded(candidate.path, candidate.size if same else candidate.size + 1,
                                             candidate.mtime_ns, candidate.size, candidate.mtime_ns))
    return PairFacts(replica="/mnt/backup", origin="exao1", configured=True, settle_ns=SETTLE,
                     candidates=CandidateSet.of(candidates), drift=drift, unrecorded=unrecorded)


@given(pairs())
def test_every_settled_unenrolled_candidate_is_copied_once(pair):
    diff = diff_replicas(ReplicaFacts(now_ns=NOW, pairs=[pair]))
    copies = [a for a in diff.actions if a.kind == "copy"]
    enrolls = [a for a in diff.actions if a.kind == "enroll"]
    assert len(copies) <= 1 and len(enrolls) <= 1
    enrolled = set(enrolls[0].details["files"]) if enrolls else set()
    copied = copies[0].details["files"] if copies else []
    expected = [c.path for c in pair.candidates if c.mtime_ns <= NOW - SETTLE and c.path not in enrolled]
    assert copied == expected
    assert not enrolled & set(copied)
    if copies:
        sizes = {c.path: c.size for c in pair.candidates}
        assert copies[0].details["bytes"] == sum(sizes[path] for path in copied)
        assert not copies[0].destructive
    settling = sum(1 for c in pair.candidates if c.mtime_ns > NOW - SETTLE and c.path not in enrolled)
    waiting = [note for note in diff.notes if note.message.startswith("waiting")]
    assert bool(waiting) == bool(settling)
    if settling:
        assert f"waiting: {settling:,} files" in waiting[0].message


@given(pairs())
def test_enrolment_only_takes_copies_that_match_the_origin(pair):
    diff = diff_replicas(ReplicaFacts(now_ns=NOW, pairs=[pair]))
    enrolled = {path for a in diff.actions if a.kind == "enroll" for path in a.details["files"]}
    for entry in pair.unrecorded or []:
        assert (entry.path in enrolled) == (entry.size == entry.origin_size)


@given(pairs())
def test_the_plan_is_the_same_for_the_same_facts(pair):
    first = diff_replicas(ReplicaFacts(now_ns=NOW, pairs=[pair]))
    second = diff_replicas(ReplicaFacts(now_ns=NOW, pairs=[pair]))
    assert [(a.id, a.precondition) for a in first.actions] == [(a.id, a.precondition) for a in second.actions]


def test_nothing_to_do_is_no_action():
    pair = PairFacts(replica="r", origin="o", configured=True, settle_ns=SETTLE)
    assert diff_replicas(ReplicaFacts(now_ns=NOW, pairs=[pair])).actions == []


def test_an_unconfigured_origin_found_on_the_replica_is_only_enrolled():
    pair = PairFacts(replica="r", origin="retired", configured=False,
                     unrecorded=[Unrecorded("a", 1, NOW, None, None)])
    actions = diff_replicas(ReplicaFacts(now_ns=NOW, pairs=[pair])).actions
    assert [(a.kind, a.details["files"]) for a in actions] == [("enroll", ["a"])]


def test_drift_is_named_in_the_reason():
    pair = PairFacts(replica="r", origin="o", configured=True, settle_ns=SETTLE,
                     candidates=CandidateSet.of([Candidate("a", 1, NOW - 3600 * SECOND, False),
                                                 Candidate("b", 1, NOW - 3600 * SECOND, False)]), drift={"b"})
    (action,) = diff_replicas(ReplicaFacts(now_ns=NOW, pairs=[pair])).actions
    assert action.reason == "1 files new on origin o; 1 missing or different on the replica (drift)"


def test_the_copy_precondition_changes_with_any_path_size_or_mtime():
    files = [Candidate(f"telem/f{index:05d}.bin", index, NOW - 3600 * SECOND + index, False) for index in range(5000)]
    every = list(range(len(files)))

    def precondition(changed: list[Candidate], indices: list[int] = every) -> str:
        return copy_precondition("/mnt/backup", "exao1", CandidateSet.of(changed), indices)

    base = precondition(files)
    assert precondition(list(files)) == base
    for field, value in (("path", "telem/other.bin"), ("size", 10**9), ("mtime_ns", NOW - 7 * SECOND)):
        changed = list(files)
        changed[4500] = changed[4500]._replace(**{field: value})
        assert precondition(changed) != base, field
    assert precondition(files, every[:-1]) != base  # one file fewer
    assert copy_precondition("/mnt/other", "exao1", CandidateSet.of(files), every) != base
