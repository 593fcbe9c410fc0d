"""The replicas planner: pure functions from facts to actions. No I/O, no clock."""

from __future__ import annotations

import hashlib
import json
from array import array
from dataclasses import dataclass, field

from pydantic import Field

from reconciler.engine.actions import Action, AddressMessage, Details
from reconciler.engine.kind import Diff
from reconciler.kinds.replicas.inventory import CandidateSet, ScrubFacts, Unrecorded
from reconciler.units import human_bytes

SECOND = 1_000_000_000



class FilesDetails(Details):
    """A ``copy`` or ``scrub``: files of ``origin`` (paths below its root), and their bytes."""

    origin: str
    files: list[str]
    bytes: int


class EnrollDetails(FilesDetails):
    """An ``enroll``: files found on the replica, with the size and mtime each was listed with."""

    sizes: list[int] = Field(alias="_sizes")
    mtimes_ns: list[int] = Field(alias="_mtimes_ns")


class TrimDetails(Details):
    """A ``trim``: origin files to remove, and the replicas whose verified copies are counted."""

    files: list[str]
    bytes: int
    replicas: list[str]
    min_copies: int


DETAILS: dict[str, type[Details]] = {"copy": FilesDetails, "scrub": FilesDetails, "enroll": EnrollDetails,
                                     "trim": TrimDetails}

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
    scrub: ScrubFacts | None = None  # copies to read now (checksum = "sha256")
    lost: tuple[int, list[str]] = (0, [])  # files whose every copy is corrupt and the origin lost them


@dataclass
class Offline:
    """A removable replica found absent (or an empty mount point without its marker)."""

    replica: str
    reason: str
    since: str  # ISO time it was first found offline
    stale: bool  # offline for longer than stale_after
    stale_after: str


@dataclass
class TrimFacts:
    """What a trim of one origin rests on (see trim.py)."""

    origin: str
    min_copies: int
    older_than: str
    replicas: list[str]  # the replicas whose verified copies count
    paths: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    old: int = 0  # files older than older_than in all
    refused: str | None = None  # why no trim at all this run


@dataclass
class ReplicaFacts:
    now_ns: int
    pairs: list[PairFacts] = field(default_factory=list)
    errors: list[AddressMessage] = field(default_factory=list)
    offline: list[Offline] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)  # replicas whose marker the next apply writes
    notes: list[AddressMessage] = field(default_factory=list)  # e.g. origins left to their own host's run
    trims: list[TrimFacts] = field(default_factory=list)


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


def scrub_precondition(replica: str, origin: str, scrub: ScrubFacts) -> str:
    digest = hashlib.sha256(json.dumps([replica, origin], ensure_ascii=False).encode("utf-8"))
    digest.update("".join(path + "\0" for path in scrub.paths).encode("utf-8", "surrogatepass"))
    digest.update(array("q", scrub.sizes).tobytes())
    return digest.hexdigest()


def diff_scrub(pair: PairFacts) -> tuple[list[Action], list[AddressMessage]]:
    """The scrub action (re-read copies, repair corrupt ones) and the lost-file error of one pair."""
    address = replica_address(pair.replica)
    actions: list[Action] = []
    errors: list[AddressMessage] = []
    lost, first = pair.lost
    if lost:
        errors.append(AddressMessage(address=address, message=(
            f"{lost:,} files of origin {pair.origin} are lost: gone from the origin and every copy is corrupt "
            f"(e.g. {', '.join(first)}); restore them from elsewhere")))
    scrub = pair.scrub
    if scrub is not None and scrub.paths:
        parts = []
        if scrub.corrupt:
            parts.append(f"{scrub.corrupt:,} corrupt to repair")
        if scrub.unverified:
            parts.append(f"{scrub.unverified:,} never verified")
        rest = len(scrub.paths) - scrub.corrupt - scrub.unverified
        if rest:
            parts.append(f"{rest:,} due for the scrub")
        later = scrub.due - len(scrub.paths)
        budget_note = f"; {later:,} more due later (scrub_budget)" if later > 0 else ""
        actions.append(Action.create(
            address=address,
            kind="scrub",
            reason=(f"re-read {len(scrub.paths):,} copies of origin {pair.origin} ({human_bytes(sum(scrub.sizes))}) "
                    f"and compare their sha256: {', '.join(parts)}{budget_note}"),
            precondition=scrub_precondition(pair.replica, pair.origin, scrub),
            details={"origin": pair.origin, "files": list(scrub.paths), "bytes": sum(scrub.sizes)},
        ))
    return actions, errors


def diff_offline(offline: Offline) -> tuple[list[AddressMessage], list[AddressMessage]]:
    """(notes, warnings) of a removable replica that is offline."""
    address = replica_address(offline.replica)
    if offline.stale:
        return [], [AddressMessage(address=address, message=(
            f"offline since {offline.since}, longer than stale_after = {offline.stale_after}: its copies are "
            f"not being kept up to date; connect it so the next run catches up ({offline.reason})"))]
    return [AddressMessage(address=address, message=(
        f"offline since {offline.since} (removable; a warning after stale_after = {offline.stale_after}): "
        f"{offline.reason}"))], []


def diff_trim(trim: TrimFacts) -> tuple[list[Action], list[AddressMessage]]:
    """The destructive trim action of one origin, and notes on what it keeps and why."""
    address = f"origin:{trim.origin}"
    if trim.refused:
        return [], [AddressMessage(address=address, message=f"trim refused: {trim.refused}")]
    actions: list[Action] = []
    notes: list[AddressMessage] = []
    if trim.paths:
        digest = hashlib.sha256(json.dumps([trim.origin, sorted(trim.replicas), trim.min_copies]).encode())
        digest.update("".join(path + "\0" for path in trim.paths).encode("utf-8", "surrogatepass"))
        digest.update(array("q", trim.sizes).tobytes())
        actions.append(Action.create(
            address=address, kind="trim", destructive=True,
            reason=(f"remove {len(trim.paths):,} files older than {trim.older_than} from origin {trim.origin}: each "
                    f"has at least {trim.min_copies} copies verified by sha256 within scrub_every (on "
                    f"{', '.join(sorted(trim.replicas))}), each checked again right before the removal"),
            precondition=digest.hexdigest(),
            details={"files": list(trim.paths), "bytes": sum(trim.sizes), "replicas": sorted(trim.replicas),
                     "min_copies": trim.min_copies}))
    kept = trim.old - len(trim.paths)
    if kept:
        notes.append(AddressMessage(address=address, message=(
            f"trim keeps {kept:,} files older than {trim.older_than}: fewer than {trim.min_copies} copies verified "
            "by sha256 within scrub_every (the scrub and copies will get them there)")))
    return actions, notes


def diff_replicas(facts: ReplicaFacts) -> Diff:
    """Every pair's actions, in config order."""
    diff = Diff(errors=list(facts.errors), notes=list(facts.notes))
    for offline in facts.offline:
        notes, warnings = diff_offline(offline)
        diff.notes.extend(notes)
        diff.warnings.extend(warnings)
    for pair in facts.pairs:
        actions, notes = diff_pair(pair, facts.now_ns)
        diff.actions.extend(actions)
        diff.notes.extend(notes)
        actions, errors = diff_scrub(pair)
        diff.actions.extend(actions)
        diff.errors.extend(errors)
    for trim in facts.trims:
        actions, notes = diff_trim(trim)
        diff.actions.extend(actions)
        diff.notes.extend(notes)
    copying = {action.address for action in diff.actions if action.kind == "copy"}
    marks = [Action.create(address=replica_address(replica), kind="mark",
                           reason=".reconciler-replica: write the replica marker at its root, so that an empty "
                                  "mount point is never taken for this replica",
                           facts={"replica": replica})
             for replica in facts.marks if replica_address(replica) not in copying]  # a copy writes it itself
    diff.actions[:0] = marks  # first, in the config's order
    return diff
