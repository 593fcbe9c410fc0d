"""The replicas planner: pure functions from facts to actions. No I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass, field

import hashlib
import json
from array import array

from reconciler.engine.actions import Action, AddressMessage
from reconciler.engine.kind import Diff
from reconciler.kinds.replicas.inventory import CandidateSet, Unrecorded

SECOND = 1_000_000_000


@dataclass
class PairFacts:
    """What was observed for one (replica, origin) pair."""

    replica: str
    origin: str
    configured: bool  # the origin is in the config (else it is only known from the replica)
    settle_ns: int = 0
    candidates: CandidateSet = field(default_factory=CandidateSet)
    drift: set[str] = field(default_factory=set)
    unrecorded: list[Unrecorded] | None = None  # when the replica was listed and import_origins is on


@dataclass
class ReplicaFacts:
    now_ns: int
    pairs: list[PairFacts] = field(default_factory=list)
    errors: list[AddressMessage] = field(default_factory=list)


def replica_address(replica: str) -> str:
    return f"replica:{replica}"


def _same(size: int, mtime_ns: int, other_size: int | None, other_mtime_ns: int | None) -> bool:
    return other_size == size and other_mtime_ns is not None and other_mtime_ns // SECOND == mtime_ns // SECOND


def copy_precondition(replica: str, origin: str, candidates: CandidateSet, indices: list[int]) -> str:
    """What a copy relies on: the path, size and mtime of each file it copies, hashed a block
    at a time (each block: its count, its paths NUL-terminated, then its sizes and mtimes as
    64-bit integers) rather than built as one large value."""
    digest = hashlib.sha256(json.dumps([replica, origin], ensure_ascii=False).encode("utf-8"))
    paths, sizes, mtimes = candidates.paths, candidates.sizes, candidates.mtimes
    for start in range(0, len(indices), 4096):
        block = indices[start:start + 4096]
        digest.update(b"%d\0" % len(block))
        digest.update("".join([paths[i] + "\0" for i in block]).encode("utf-8", "surrogatepass"))
        digest.update(array("q", [sizes[i] for i in block]).tobytes())
        digest.update(array("q", [mtimes[i] for i in block]).tobytes())
    return digest.hexdigest()


def enrollable(pair: PairFacts) -> list[Unrecorded]:
    """Files found on the replica to enrol: those the origin does not know, or knows
    with the same size and mtime (to the second). Others are outdated: a copy fixes them."""
    if pair.unrecorded is None:
        return []
    return [entry for entry in pair.unrecorded
            if entry.origin_size is None or _same(entry.size, entry.mtime_ns, entry.origin_size, entry.origin_mtime_ns)]


def diff_pair(pair: PairFacts, now_ns: int) -> tuple[list[Action], list[AddressMessage]]:
    """The enroll and copy actions (and a waiting note) for one pair."""
    address = replica_address(pair.replica)
    actions: list[Action] = []
    notes: list[AddressMessage] = []
    to_enroll = enrollable(pair)
    if to_enroll:
        actions.append(
            Action.create(
                address=address,
                kind="enroll",
                reason=f"{len(to_enroll):,} files already on the replica for origin {pair.origin}: "
                       "record them in the inventory (nothing is copied)",
                facts={"replica": pair.replica, "origin": pair.origin,
                       "entries": [(e.path, e.size, e.mtime_ns) for e in to_enroll]},
                details={
                    "origin": pair.origin,
                    "files": [entry.path for entry in to_enroll],
                    "bytes": sum(entry.size for entry in to_enroll),
                    "_sizes": [entry.size for entry in to_enroll],
                    "_mtimes_ns": [entry.mtime_ns for entry in to_enroll],
                },
            )
        )
    if not pair.configured:
        return actions, notes
    enrolled = {entry.path for entry in to_enroll}
    cutoff = now_ns - pair.settle_ns
    candidates = pair.candidates
    ready: list[int] = []
    settling = 0
    for index, mtime_ns in enumerate(candidates.mtimes):
        if enrolled and candidates.paths[index] in enrolled:
            continue
        if mtime_ns > cutoff:
            settling += 1
        else:
            ready.append(index)
    if settling:
        notes.append(AddressMessage(
            address=address,
            message=f"waiting: {settling:,} files on origin {pair.origin} changed within the settle time",
        ))
    if ready:
        drift = sum(1 for index in ready if candidates.paths[index] in pair.drift) if pair.drift else 0
        changed = sum(candidates.recorded[index] for index in ready)
        new = len(ready) - drift - changed
        parts = []
        if new:
            parts.append(f"{new:,} files new")
        if changed:
            parts.append(f"{changed:,} changed")
        reason = f"{' and '.join(parts) or 'files'} on origin {pair.origin}" if new or changed else ""
        if drift:
            drift_text = f"{drift:,} missing or different on the replica (drift)"
            reason = f"{reason}; {drift_text}" if reason else f"origin {pair.origin}: {drift_text}"
        actions.append(
            Action.create(
                address=address,
                kind="copy",
                reason=reason,
                precondition=copy_precondition(pair.replica, pair.origin, candidates, ready),
                details={"origin": pair.origin, "files": [candidates.paths[index] for index in ready],
                         "bytes": sum(candidates.sizes[index] for index in ready)},
            )
        )
    return actions, notes


def diff_replicas(facts: ReplicaFacts) -> Diff:
    """Every pair's actions, in config order."""
    diff = Diff(errors=list(facts.errors))
    for pair in facts.pairs:
        actions, notes = diff_pair(pair, facts.now_ns)
        diff.actions.extend(actions)
        diff.notes.extend(notes)
    return diff
