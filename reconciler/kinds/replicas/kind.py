"""The replicas resource kind: origins' files copied to every replica, inventory kept.

Observe: scan each origin into the inventory (fast path for immutable origins),
probe each replica's root, and list replicas whose verification is due or that
enrol existing backups. Diff (diff.py, pure): copy / enroll actions. Apply:
one rsync per copy action; records written only for files rsync delivered.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate
from pathlib import Path
from typing import Any

from pydantic import Field

from reconciler.engine import memo
from reconciler.engine.actions import Action, AddressMessage
from reconciler.engine.kind import ConfigPath, Diff, Kind, Observation, Progress, RunContext, executor
from reconciler.engine.planner import matches_target
from reconciler.engine.report import Measure, ReportContext, ReportSection
from reconciler.errors import ApplyError, ObserveError
from reconciler.hosts import this_host
from reconciler.kinds.replicas import due, hashing, inventory, marker, paths, trim
from reconciler.kinds.replicas.config import (
    OriginConfig,
    ReplicaConfig,
    SshSection,
    origins_of,
    replica_location,
    unsafe_origin_name,
)
from reconciler.kinds.replicas.diff import (
    DETAILS,
    EnrollDetails,
    FilesDetails,
    Offline,
    PairFacts,
    ReplicaFacts,
    TrimDetails,
    TrimFacts,
    copy_precondition,
    diff_replicas,
    enrollable,
    replica_address,
)
from reconciler.kinds.replicas.listing import Entry, make_matcher
from reconciler.kinds.replicas.local_walk import walk_local
from reconciler.kinds.replicas.memo import replicas_memo
from reconciler.kinds.replicas.remote_walk import walk_remote
from reconciler.kinds.replicas.tables import (
    OriginFile,
    OriginStatus,
    PairStatus,
    ReplicaCopy,
    ReplicaStatus,
    ScanEntry,
    ScannedDir,
)
from reconciler.providers import ssh as connections
from reconciler.providers.location import Location, SshSettings
from reconciler.providers.process import require
from reconciler.providers.rsync import argument_budget, copy_invocation, plan_batches, run_copies
from reconciler.units import format_duration


def _counted(entries: Iterable[Entry], label: str, progress: Progress, every: int = 1000) -> Iterator[Entry]:
    """``entries`` as they come, with the files among them counted to ``progress`` (of unknown
    total: a spinner on a terminal) every ``every`` files, and the end reported however it ends."""
    files = 0
    progress(label, 0, -1)  # a spinner from the start (and no log line for a short scan)
    try:
        for entry in entries:
            if entry.entry_type == "f":
                files += 1
                if files % every == 0:
                    progress(label, files, -1)
            yield entry
    finally:
        progress(label, files, files)


SCRUB_BATCH = 20_000  # copies a scrub reads, compares and records at a time


@dataclass
class ScrubOutcome:
    """What a scrub found, added up over its batches."""

    read: int = 0
    bytes: int = 0
    verified: int = 0
    repaired: int = 0
    elsewhere: int = 0  # of the repaired, from another replica
    unknown: int = 0  # not verifiable: the origin's sha256 is unknown
    failed: int = 0  # corrupt and not repaired
    failed_paths: list[str] = field(default_factory=list)  # the first few

    def text(self) -> str:
        return (f"read {self.read:,} copies ({self.bytes:,} bytes): {self.verified:,} verified"
                + (f", {self.repaired:,} corrupt and repaired" if self.repaired else "")
                + (f" ({self.elsewhere:,} from another replica)" if self.elsewhere else "")
                + (f", {self.unknown:,} not verifiable (the origin's sha256 is unknown)" if self.unknown else ""))

class ReplicasKind(Kind):
    name = "replicas"
    address_prefix = "replica"
    other_address_prefixes = ("origin",)  # trims act on an origin: origin:<name>
    sections = {
        "origins": (dict[str, OriginConfig], Field(default_factory=dict, description="Trees of instrument files.")),
        "replicas": (
            dict[str, ReplicaConfig],
            Field(default_factory=dict, description='Where copies must exist: key = local path or "ssh://host/path".'),
        ),
        "ssh": (SshSection, Field(default_factory=SshSection, description=SshSection.__doc__)),
    }
    tables = [OriginFile, ReplicaCopy, ScannedDir, OriginStatus, ReplicaStatus, PairStatus, ScanEntry]
    schema_version = 5
    migrations = {1: inventory.add_directory_digests, 2: inventory.add_integrity_columns,
                  3: inventory.add_device_column, 4: inventory.add_totals_columns}

    # --- config -------------------------------------------------------------------------------

    def addresses(self, desired: Any) -> list[str]:
        return [replica_address(key) for key in desired.replicas]

    def check(self, desired: Any, base_dir: Path) -> list[tuple[ConfigPath, str]]:
        problems: list[tuple[ConfigPath, str]] = []
        for name in desired.origins:
            reason = unsafe_origin_name(name)
            if reason:
                problems.append((("origins", name), f"origin name {name!r} {reason}: it becomes a directory "
                                                    "name on every replica (<replica>/<origin>/…); use letters, "
                                                    "digits, '.', '_' or '-'"))
        for key, replica in desired.replicas.items():
            try:
                location = Location.parse(key)
            except ValueError as error:
                problems.append((("replicas", key), str(error)))
                continue
            if replica.local is not None and replica.local == location.is_remote:
                problems.append((("replicas", key, "local"),
                                 f"local = {str(replica.local).lower()} contradicts the replica's key {key!r}"))
            if replica.scrub_every is not None:
                for name in replica.origins if replica.origins is not None else list(desired.origins):
                    origin = desired.origins.get(name)
                    if origin is not None and origin.checksum != "sha256":
                        problems.append((("replicas", key, "scrub_every"),
                                         f"scrub_every on replica {key!r} needs checksum = \"sha256\" on origin "
                                         f"{name!r} (a scrub compares each copy's sha256 with the origin's)"))
            for name in replica.origins or []:
                if name not in desired.origins:
                    known = ", ".join(sorted(desired.origins)) or "none"
                    problems.append((("replicas", key, "origins"),
                                     f"replica {key!r} names unknown origin {name!r} (origins: {known})"))
            if not location.is_remote:
                location = replica_location(key, base_dir)
                for name, origin in desired.origins.items():
                    root = origin.location
                    if not root.is_remote and (location.path + "/").startswith(root.path.rstrip("/") + "/"):
                        problems.append((("replicas", key),
                                         f"replica {key!r} lies inside origin {name!r} ({root.path}): "
                                         "it would copy into itself; put it elsewhere"))
        for name, origin in desired.origins.items():
            if origin.trim is not None and origin.checksum != "sha256":
                problems.append((("origins", name, "trim"),
                                 f"trim on origin {name!r} needs checksum = \"sha256\" (a file is removed only "
                                 "when its copies' sha256 match the origin's)"))
        return problems

    # --- observe ------------------------------------------------------------------------------

    def observe(self, desired: Any, ctx: RunContext) -> Observation:
        now_ns = time.time_ns()
        facts = ReplicaFacts(now_ns=now_ns)
        if not desired.replicas and not desired.origins:
            return Observation(facts=facts, memo=memo.Memo())  # nothing declared: nothing to check
        require("rsync", "rsync")
        full_scan = bool(ctx.options.get("full_scan"))
        wanted = {key: rep for key, rep in desired.replicas.items()
                  if not ctx.targets or matches_target(replica_address(key), ctx.targets)}
        ssh = connections.shared(desired.ssh.settings(), [
            *(origin.location for origin in desired.origins.values()),
            *(replica_location(key, ctx.base_dir) for key in wanted)])
        needed_origins = {name for rep in wanted.values() for name in origins_of(desired, rep)}
        with ctx.state.engine.begin() as connection:
            inventory.sweep_old_scans(connection)
        origin_errors: dict[str, str] = {}
        elsewhere: dict[str, str] = {}  # local_only origins of other hosts: their own host's run reads them
        ledger = due.Ledger()  # what this observation decided, for the no-change memo (due.py)
        for name, origin in desired.origins.items():
            if ctx.targets and name not in needed_origins:
                continue
            if origin.local_only and not origin.here:
                elsewhere[name] = self._left_to_its_host(ctx, desired, name, origin, wanted)
                facts.notes.append(AddressMessage(address=f"origin:{name}", message=elsewhere[name]))
                ledger.unsettle(f"origin {name} is read on host {origin.home} only")  # no local directory to replay
                continue
            try:
                self._scan_origin(ctx, name, origin, ssh, now_ns, full_scan, ledger)
            except ObserveError as error:
                origin_errors[name] = str(error)
        for key, replica in wanted.items():
            address = replica_address(key)
            location = replica_location(key, ctx.base_dir)
            try:
                if not self._present(ctx, desired, key, replica, location, ssh, facts):
                    continue  # offline (a removable replica): a note or a warning, nothing else
                pairs = self._observe_replica(ctx, desired, key, replica, location, ssh, full_scan,
                                              {**elsewhere, **origin_errors}, ledger)
            except ObserveError as error:
                facts.errors.append(AddressMessage(address=address, message=str(error)))
                continue
            facts.pairs.extend(pairs)
            for name in origins_of(desired, replica):
                if name in origin_errors:
                    facts.errors.append(AddressMessage(address=address,
                                                       message=f"origin {name}: {origin_errors[name]}"))
        self._observe_trims(ctx, desired, facts, origin_errors, wanted, ledger)
        no_change_memo = None
        if memo.wanted(ctx.state, ctx.targets) and not origin_errors and not facts.errors and not ledger.unsettled:
            replicas = {key: (replica, replica_location(key, ctx.base_dir), origins_of(desired, replica))
                        for key, replica in wanted.items()}
            with ctx.state.engine.begin() as connection:
                no_change_memo = replicas_memo(connection, desired, replicas, ledger)
        return Observation(facts=facts, errors=[], memo=no_change_memo)

    def _scan_origin(self, ctx: RunContext, name: str, origin: OriginConfig, ssh: SshSettings, now_ns: int,
                     full_scan: bool, ledger: due.Ledger) -> None:
        location = origin.location
        matcher = make_matcher(origin.include, origin.exclude)
        cutoff = now_ns - int(origin.settle.total_seconds() * 1e9)
        with ctx.state.engine.begin() as connection:
            status = inventory.origin_status(connection, name)
            last = inventory.as_utc(status.last_full_scan) if status.last_full_scan is not None else None
            scan_due = ledger.decide(f"full scan of origin {name}",
                                     due.full_scan(last, origin.full_scan_every, inventory.now_utc()))
            fast = origin.immutable and not full_scan and not scan_due
            known = inventory.known_dirs(connection, name)
        if location.is_remote:
            ledger.unsettle(f"origin {name} is read over ssh")  # a replay reads no remote directory
        if not origin.immutable:
            ledger.unsettle(f"origin {name} is not immutable")  # every file is read again each run

        if location.is_remote:
            entries = walk_remote(location, ssh, matcher, cutoff, known, fast=fast)
        else:
            entries = walk_local(location.path, matcher, cutoff, known, fast=fast, jobs=origin.scan_jobs)
        entries = _counted(entries, f"scan origin:{name}", ctx.progress)
        scan_id = inventory.new_scan_id()
        dirs: list[Entry] = []
        try:
            with ctx.state.engine.begin() as connection:
                inventory.load_entries(connection, scan_id, entries, dirs)
                inventory.apply_origin_scan(connection, name, scan_id, dirs, full=not fast)
        finally:
            with ctx.state.engine.begin() as connection:
                inventory.drop_scan(connection, scan_id)
        ctx.log.debug("scanned origin %s (%s)", name, "fast path" if fast else "full")

    @staticmethod
    def _left_to_its_host(ctx: RunContext, desired: Any, name: str, origin: OriginConfig,
                          wanted: dict[str, ReplicaConfig]) -> str:
        """What a run on another host says of a local_only origin it neither reads nor copies:
        never silence, so that a plan with nothing to do here is not taken for all in order."""
        replicas = [key for key, replica in wanted.items() if name in origins_of(desired, replica)]
        with ctx.state.engine.begin() as connection:
            last = inventory.origin_status(connection, name).last_scan
        seen = (f"a run there last read it at {inventory.as_utc(last):%Y-%m-%d %H:%M} UTC" if last is not None
                else "no run there has read it yet")
        held = f" nor plan its copies to {', '.join(replicas)}" if replicas else ""
        return (f"not checked by this run on {this_host()}: origin {name} is local_only on host {origin.home}, "
                f"whose own run reads it and copies it; this run did not read it{held} ({seen})")

    def _observe_trims(self, ctx: RunContext, desired: Any, facts: ReplicaFacts, origin_errors: dict[str, str],
                       wanted: dict[str, ReplicaConfig], ledger: due.Ledger) -> None:
        """Which origin files a trim may remove (trim.py); none while a replica of the origin is
        offline, unobserved or not in this run."""
        offline = {item.replica for item in facts.offline}
        failed = {error.address for error in facts.errors}
        now = inventory.now_utc()
        for name, origin in desired.origins.items():
            if origin.trim is None or (ctx.targets and not matches_target(f"origin:{name}", ctx.targets)):
                continue
            if origin.local_only and not origin.here:
                continue  # its own host's run trims it (this one did not read it)
            # Files fall old enough to trim as time passes, and each trim rests on a re-check.
            ledger.unsettle(f"origin {name} trims")
            holders = [key for key, replica in desired.replicas.items() if name in origins_of(desired, replica)]
            counted = {key: now - desired.replicas[key].scrub_every for key in holders
                       if desired.replicas[key].scrub_every is not None}
            found = TrimFacts(name, origin.trim.min_copies, format_duration(origin.trim.older_than), sorted(counted))
            facts.trims.append(found)
            reasons = [f"origin {name} could not be read"] if name in origin_errors else []
            reasons += [f"replica {key} is offline" for key in holders if key in offline]
            reasons += [f"replica {key} could not be observed" for key in holders
                        if replica_address(key) in failed or key not in wanted]
            if len(counted) < origin.trim.min_copies:
                reasons.append(f"only {len(counted)} replicas of origin {name} have scrub_every (their copies are "
                               f"re-verified), min_copies = {origin.trim.min_copies}")
            if reasons:
                found.refused = "; ".join(reasons)
                continue
            older = time.time_ns() - int(origin.trim.older_than.total_seconds() * 1e9)
            with ctx.state.engine.begin() as connection:
                result = trim.trimmable(connection, name, older, origin.trim.min_copies, counted)
            found.paths, found.sizes, found.old = result.paths, result.sizes, result.old

    def _present(self, ctx: RunContext, desired: Any, key: str, replica: ReplicaConfig, location: Location,
                 ssh: SshSettings, facts: ReplicaFacts) -> bool:
        """Whether the replica's root is there and is the replica the state knows (its marker).
        An absent root or an empty mount point is offline for a removable replica (recorded,
        and False), an ObserveError for any other; never taken for an empty replica."""
        origins = origins_of(desired, replica)
        with ctx.state.engine.begin() as connection:
            status = inventory.replica_status(connection, key)
            holds = inventory.holds_copies(connection, key)
        found = marker.probe(location, ssh, origins)
        if found.marker is not None and found.marker != status.marker_id:
            with ctx.state.engine.begin() as connection:
                owner = inventory.marker_owner(connection, found.marker, key)
        else:
            owner = None
        # The path alone: the address names the host (and a second ssh:// URL on one line
        # can read as a password to the redaction of plans).
        judged = marker.judge(found, location.path, status.marker_id, holds, replica.removable,
                              status.device, owner)
        if judged.state == "error":
            raise ObserveError(judged.message)
        now = inventory.now_utc()
        with ctx.state.engine.begin() as connection:
            if judged.state == "offline":
                since = inventory.as_utc(status.offline_since) if status.offline_since else now
                if status.offline_since is None:
                    inventory.set_replica_fields(connection, key, offline_since=now)
                facts.offline.append(Offline(key, judged.message, since.strftime("%Y-%m-%d %H:%M UTC"),
                                             now - since >= replica.stale_after,
                                             format_duration(replica.stale_after)))
                return False
            updates: dict[str, Any] = {}
            if status.offline_since is not None:
                updates["offline_since"] = None
            if judged.adopt:
                updates["marker_id"] = judged.adopt
            if judged.device:
                updates["device"] = judged.device
            if updates:
                inventory.set_replica_fields(connection, key, **updates)
        if judged.write_marker and holds:
            facts.marks.append(key)
        return True

    def _observe_replica(self, ctx: RunContext, desired: Any, key: str, replica: ReplicaConfig, location: Location,
                         ssh: SshSettings, full_scan: bool, origin_errors: dict[str, str],
                         ledger: due.Ledger) -> list[PairFacts]:
        origin_names = [name for name in origins_of(desired, replica) if name not in origin_errors]
        with ctx.state.engine.begin() as connection:
            status = inventory.replica_status(connection, key)
        last_verify = inventory.as_utc(status.last_verify) if status.last_verify is not None else None
        now = inventory.now_utc()
        if location.is_remote:
            ledger.unsettle(f"replica {key} is over ssh")  # a replay checks local roots only
        verification = due.verification(last_verify, replica.verify_every, now, full_scan)
        verify_due = ledger.decide(f"verification of replica {key}", verification)
        enroll_due = ledger.decide(f"enrolment from replica {key}",
                                   due.enrolment(replica.import_origins, last_verify, full_scan, verification))
        pairs: dict[str, PairFacts] = {}
        for name in origin_names:
            settle = desired.origins[name].settle
            pairs[name] = PairFacts(replica=key, origin=name, configured=True,
                                    settle_ns=int(settle.total_seconds() * 1e9))
        listed = verify_due or enroll_due
        scan_ids: dict[str, str] = {}
        try:
            if listed:
                scan_ids = self._list_replica(ctx, location, ssh, replica.scan_jobs)
            with ctx.state.engine.begin() as connection:
                for name, scan_id in scan_ids.items():
                    if name not in pairs:
                        if not replica.import_origins:
                            continue
                        pairs[name] = PairFacts(replica=key, origin=name, configured=False)
                    pair = pairs[name]
                    if verify_due and pair.configured:
                        pair.drift = set(inventory.verify_against_listing(connection, key, name, scan_id))
                    if replica.import_origins:
                        pair.unrecorded = list(inventory.unrecorded(connection, key, name, scan_id))
                if verify_due:
                    for name in origin_names:
                        if name not in scan_ids:  # the replica holds nothing of this origin
                            pairs[name].drift = set(inventory.verify_against_listing(
                                connection, key, name, "none"))
                # The listing is done with once nothing it found needs acting on; until then the
                # next observation (apply's own, or the next run's) lists again and finds the same.
                if listed and not any(pair.drift or enrollable(pair) for pair in pairs.values()):
                    inventory.touch_replica(connection, key, verify=now)
                budget = int(replica.scrub_budget) if replica.scrub_budget is not None else None
                due_before = now - replica.scrub_every if replica.scrub_every is not None else None
                for name in origin_names:
                    if desired.origins[name].checksum != "sha256":
                        continue
                    pair = pairs[name]
                    pair.scrub = inventory.scrub_due(connection, key, name, due_before, budget)
                    pair.lost = inventory.lost_files(connection, key, name)
                    if pair.scrub.paths:
                        ledger.unsettle(f"copies of {name} on replica {key} to verify")
                    else:
                        ledger.decide(f"scrub of replica {key}",
                                      due.scrub(inventory.next_scrub_due(connection, key), replica.scrub_every, now))
                    if budget is not None:
                        budget = max(0, budget - sum(pair.scrub.sizes))
                for name in origin_names:
                    pair = pairs[name]
                    generation = inventory.origin_status(connection, name).generation
                    if (not listed and not pair.drift and due.pair_complete(
                            inventory.pair_complete_generation(connection, key, name), generation)):
                        continue
                    pair.candidates = inventory.candidates(connection, key, name)
                    if not pair.candidates:
                        inventory.set_pair_complete(connection, key, name, generation)
                    else:
                        ledger.unsettle(f"replica {key} lacks files of {name}")
                        if pair.drift:
                            inventory.set_pair_complete(connection, key, name, -1)
        finally:
            if scan_ids:
                with ctx.state.engine.begin() as connection:
                    for scan_id in scan_ids.values():
                        inventory.drop_scan(connection, scan_id)
        return list(pairs.values())

    def _list_replica(self, ctx: RunContext, location: Location, ssh: SshSettings, jobs: int) -> dict[str, str]:
        """List the whole replica into scratch tables, one per ``<origin>/`` directory found."""
        if location.is_remote:
            entries = walk_remote(location, ssh, None, settle_cutoff_ns=2**62)
        else:
            entries = walk_local(location.path, None, settle_cutoff_ns=2**62, jobs=jobs)
        scan_ids: dict[str, str] = {}

        def rows() -> Any:
            for entry in entries:
                if entry.entry_type != "f" or b"/" not in entry.path:
                    continue
                origin, _, rest = entry.path.partition(b"/")
                name = os.fsdecode(origin)
                if name not in scan_ids:
                    scan_ids[name] = inventory.new_scan_id()
                yield (scan_ids[name], "f", paths.to_text(rest), paths.to_text(rest.rpartition(b"/")[0]),
                       entry.size, entry.mtime_ns)

        with ctx.state.engine.begin() as connection:
            inventory.bulk_insert_scan(connection, rows())
        return scan_ids

    # --- diff ---------------------------------------------------------------------------------

    def diff(self, desired: Any, observation: Observation) -> Diff:
        facts: ReplicaFacts = observation.facts
        if facts is None:
            return Diff()
        return diff_replicas(facts)

    def recheck(self, action: Action, desired: Any, observation: Observation) -> str | None:
        """A copy stays valid while the files it copies are unchanged and still missing,
        whatever else arrived meanwhile; other actions re-diff."""
        if action.kind != "copy":
            return super().recheck(action, desired, observation)
        facts: ReplicaFacts = observation.facts
        replica = action.address.split(":", 1)[1]
        planned = FilesDetails.of(action)
        wanted = set(planned.files)
        for pair in facts.pairs:
            if pair.replica == replica and pair.origin == planned.origin:
                paths = pair.candidates.paths
                indices = [index for index, path in enumerate(paths) if path in wanted]
                return copy_precondition(replica, pair.origin, pair.candidates, indices)
        return None

    # --- apply --------------------------------------------------------------------------------

    def locks(self, action: Action) -> dict[str, bool]:
        """A copy, scrub, enrolment or marker changes its replica and reads its origin (shared:
        copies from one origin to several replicas run at once); a trim changes its origin and
        reads the replicas whose copies it counts."""
        details = DETAILS[action.kind].of(action) if action.kind in DETAILS else None
        if isinstance(details, TrimDetails):
            return {action.address: True, **{replica_address(key): False for key in details.replicas}}
        if isinstance(details, FilesDetails):
            return {action.address: True, f"origin:{details.origin}": False}
        return {action.address: True}

    @staticmethod
    def _origin_of(details: FilesDetails, address: str, desired: Any) -> tuple[str, OriginConfig]:
        """The origin an action names, with its config. Raises ApplyError when the config no
        longer has it (the plan is out of date)."""
        origin_name = details.origin
        origin = desired.origins.get(origin_name)
        if origin is None:
            raise ApplyError(f"{address}: origin {origin_name} is no longer in the config; run plan again")
        return origin_name, origin

    @executor("copy")
    def copy(self, action: Action, ctx: RunContext) -> str:
        desired = ctx.desired
        replica = action.address.split(":", 1)[1]
        planned = FilesDetails.of(action)
        origin_name, origin = self._origin_of(planned, action.address, desired)
        source = origin.location
        destination = replica_location(replica, ctx.base_dir)
        ssh = connections.shared(desired.ssh.settings(), [source, destination])
        files = planned.files
        replica_config = desired.replicas.get(replica) or ReplicaConfig()
        invocation = copy_invocation(source, destination, origin_name, ssh, replica_config.bwlimit_kib())
        batches = plan_batches([paths.to_bytes(path) for path in files], replica_config.copy_batch_files,
                               argument_budget(), first_limit=1 if replica_config.copy_jobs > 1 else None)
        starts = list(accumulate((len(batch) for batch in batches), initial=0))

        label = f"copy {action.address} from {origin_name}"
        self._ensure_marker(ctx, replica, destination, ssh)
        checksums = origin.checksum == "sha256"
        if checksums:  # hashed (and recorded) before the copy, a batch at a time; read back below
            for start in range(0, len(files), SCRUB_BATCH):
                self._origin_hashes(ctx, origin_name, origin, files[start:start + SCRUB_BATCH], ssh)
        all_copied: list[str] = []

        bytes_total = planned.bytes
        bytes_done = [0]  # of the batches finished so far (rsync reports names, not sizes)

        def record(index: int, delivered: list[bytes] | None) -> None:
            # A whole batch is recorded by the plan's own paths (batches are slices of them).
            copied = (files[starts[index]:starts[index + 1]] if delivered is None
                      else [paths.to_text(name) for name in delivered])
            with ctx.state.engine.begin() as connection:
                bytes_done[0] += inventory.record_copied(connection, replica, origin_name, copied)
            if checksums:
                all_copied.extend(copied)

        def progress(done: int, total: int) -> None:  # the end is told once every batch is recorded
            ctx.progress(label, min(done, total - 1) if total else done, total, bytes_done=bytes_done[0],
                         bytes_total=bytes_total)

        result = run_copies(invocation, batches, replica_config.copy_jobs, progress, record, ctx.stop)
        ctx.progress(label, result.delivered, len(files), bytes_done=bytes_done[0], bytes_total=bytes_total)
        with ctx.state.engine.begin() as connection:
            inventory.touch_replica(connection, replica, sync=inventory.now_utc())
        checked = ""
        if checksums and all_copied:
            def again(bad: list[str]) -> None:
                self._rsync(origin.location, destination, origin_name, ssh, bad, replica_config, ignore_times=True)

            verified = repaired = 0
            failed: list[str] = []
            for start in range(0, len(all_copied), SCRUB_BATCH):  # the memory of a batch, never of all
                chunk = all_copied[start:start + SCRUB_BATCH]
                expected = self._origin_hashes(ctx, origin_name, origin, chunk, ssh)
                good, fixed, bad = self._verify(ctx, replica, destination, origin_name, chunk, expected, ssh, again)
                verified, repaired, failed = verified + good, repaired + fixed, failed + bad
            again_text = f" ({repaired:,} after copying again)" if repaired else ""
            checked = f"; {verified:,} verified by sha256{again_text}"
            if failed:
                raise ApplyError(f"{action.address}: {len(failed):,} copies differ from the origin (sha256) even "
                                 f"after copying them again (e.g. {', '.join(failed[:3])}): recorded as corrupt; "
                                 "is the replica's disk failing?")
        if result.error is not None:
            raise ApplyError(f"{action.address}: {result.error}; {result.delivered:,} of {len(files):,} files "
                             "copied and recorded, the next run retries the rest")
        if result.interrupted:
            raise ApplyError(f"{action.address}: stopped as asked after {result.delivered:,} of {len(files):,} "
                             "files (each copied file is recorded); the next run copies the rest")
        if not result.complete:
            raise ApplyError(f"{action.address}: {result.delivered:,} of {len(files):,} files copied; "
                             f"{result.warning}; the next run retries the rest")
        return (f"copied {len(files):,} files ({result.transferred:,} transferred, the rest already there) "
                f"with {len(batches):,} rsync run{'s' if len(batches) != 1 else ''}{checked}")

    # --- integrity: the marker, checksums, the scrub ---------------------------------------------

    def _ensure_marker(self, ctx: RunContext, key: str, location: Location, ssh: SshSettings) -> None:
        """Before anything is written to a replica: its root holds the marker the state records,
        on the file system the state records (else ApplyError: an unmounted disk, or another
        disk holding a copy of the marker, is never filled), or, for a replica whose marker is
        not recorded yet, write one (atomically) and record it with the root's device identity."""
        with ctx.state.engine.begin() as connection:
            status = inventory.replica_status(connection, key)
        probe = marker.probe(location, ssh, [])
        if status.marker_id is None:
            found = marker.write(location, ssh, marker.new_id(), probe.device)
            with ctx.state.engine.begin() as connection:
                inventory.set_replica_fields(connection, key, marker_id=found, device=probe.device)
            return
        if not probe.present or probe.marker is None:
            raise ApplyError(f"{replica_address(key)}: {location} no longer holds its replica marker "
                             f"{marker.MARKER} (id {status.marker_id}): unmounted? Nothing was written")
        with ctx.state.engine.begin() as connection:
            owner = inventory.marker_owner(connection, probe.marker, key)
        problem = marker.check(probe, str(location), status.marker_id, status.device, owner)
        if problem is not None:
            raise ApplyError(f"{replica_address(key)}: {problem}. Nothing was written")
        if status.device is None and probe.device is not None:
            with ctx.state.engine.begin() as connection:
                inventory.set_replica_fields(connection, key, device=probe.device)

    def _origin_hashes(self, ctx: RunContext, origin_name: str, origin: OriginConfig, files: list[str],
                       ssh: SshSettings) -> dict[str, inventory.Expected]:
        """The inventory's sha256 of ``files``, hashing at the origin (once) those present there
        and not hashed yet."""
        with ctx.state.engine.begin() as connection:
            expected = inventory.expected_hashes(connection, origin_name, files)
        missing = [path for path, known in expected.items() if known.sha256 is None and known.present]
        if missing:
            found = hashing.hash_files(origin.location, ssh, "", [paths.to_bytes(path) for path in missing],
                                       ApplyError)
            rows = []
            for path in missing:
                digest = found.get(paths.to_bytes(path))
                if digest is not None:
                    known = expected[path]
                    rows.append((path, digest, known.size, known.mtime_ns))
                    expected[path] = known._replace(sha256=digest)
            with ctx.state.engine.begin() as connection:
                inventory.store_origin_hashes(connection, origin_name, rows)
        return expected

    def _rsync(self, source: Location, destination: Location, origin_name: str, ssh: SshSettings,
               files: list[str], replica_config: ReplicaConfig, ignore_times: bool) -> None:
        """Copy ``files`` again (a repair): rsync's outcome is judged by hashing afterwards."""
        invocation = copy_invocation(source, destination, origin_name, ssh, replica_config.bwlimit_kib(),
                                     ignore_times=ignore_times)
        batches = plan_batches([paths.to_bytes(path) for path in files], replica_config.copy_batch_files,
                               argument_budget())
        run_copies(invocation, batches, 1)

    def _verify(self, ctx: RunContext, key: str, destination: Location, origin_name: str, files: list[str],
                expected: dict[str, inventory.Expected], ssh: SshSettings,
                repair: Any) -> tuple[int, int, list[str]]:
        """Hash copies where they lie and compare with the origin's sha256: matches are recorded
        verified; the others corrupt, then ``repair(paths)`` copies them again and they are read
        once more. Returns (verified, of them repaired, still corrupt). Copies whose origin hash
        is unknown stay unverified."""
        def read(names: list[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str | None]]]:
            found = hashing.hash_files(destination, ssh, origin_name, [paths.to_bytes(path) for path in names],
                                       ApplyError)
            good: list[tuple[str, str]] = []
            bad: list[tuple[str, str | None]] = []
            for path in names:
                digest = found.get(paths.to_bytes(path))
                if digest is not None and digest == expected[path].sha256:
                    good.append((path, digest))
                else:
                    bad.append((path, digest))
            return good, bad

        known = [path for path in files if path in expected and expected[path].sha256 is not None]
        good, bad = read(known)
        with ctx.state.engine.begin() as connection:
            inventory.mark_checked(connection, key, origin_name, good, bad)
        if not bad:
            return len(good), 0, []
        repair([path for path, _ in bad])
        fixed, still = read([path for path, _ in bad])
        with ctx.state.engine.begin() as connection:
            inventory.mark_checked(connection, key, origin_name, fixed, still)
        return len(good) + len(fixed), len(fixed), [path for path, _ in still]

    @executor("scrub")
    def scrub(self, action: Action, ctx: RunContext) -> str:
        """Re-read copies where they lie; repair corrupt ones from the origin or, when the origin
        no longer has the file, from another replica whose copy is verified."""
        key = action.address.split(":", 1)[1]
        planned = FilesDetails.of(action)
        origin_name, _ = self._origin_of(planned, action.address, ctx.desired)
        files = planned.files
        outcome = self.scrub_copies(ctx, key, origin_name, (files[start:start + SCRUB_BATCH]
                                                            for start in range(0, len(files), SCRUB_BATCH)))
        if outcome.failed:
            raise ApplyError(f"{action.address}: {outcome.text()}; {outcome.failed:,} copies are corrupt and could "
                             f"not be repaired (e.g. {', '.join(outcome.failed_paths)}): no good copy to repair "
                             "them from")
        return outcome.text()

    def scrub_copies(self, ctx: RunContext, key: str, origin_name: str, batches: Iterable[list[str]]
                     ) -> ScrubOutcome:
        """Re-read the copies of ``origin_name``'s files on replica ``key``, batch by batch (the
        memory of a batch, never of all: a million copies are fifty batches), repairing corrupt
        ones; ``inventory verify`` streams its batches from the state. Raises ApplyError when
        the replica's marker is wrong or a host cannot be reached."""
        desired = ctx.desired
        origin = desired.origins[origin_name]
        destination = replica_location(key, ctx.base_dir)
        replica_config = desired.replicas.get(key) or ReplicaConfig()
        others = {other: replica_location(other, ctx.base_dir) for other in desired.replicas if other != key}
        ssh = connections.shared(desired.ssh.settings(), [origin.location, destination, *others.values()])
        self._ensure_marker(ctx, key, destination, ssh)
        outcome = ScrubOutcome()
        for files in batches:
            expected = self._origin_hashes(ctx, origin_name, origin, files, ssh)
            sources: dict[str, str] = {}

            def repair(bad: list[str], expected: dict[str, inventory.Expected] = expected,
                       sources: dict[str, str] = sources) -> None:
                from_origin = [path for path in bad if expected[path].present]
                if from_origin:
                    self._rsync(origin.location, destination, origin_name, ssh, from_origin, replica_config, True)
                elsewhere = [path for path in bad if not expected[path].present]
                if not elsewhere:
                    return
                with ctx.state.engine.begin() as connection:
                    good = inventory.good_copies(connection, origin_name, elsewhere, exclude=key)
                by_source: dict[str, list[str]] = {}
                for path in elsewhere:
                    usable = [other for other in good.get(path, []) if other in others]
                    if usable:
                        by_source.setdefault(usable[0], []).append(path)
                        sources[path] = usable[0]
                for other, chosen in by_source.items():
                    source = others[other]
                    source = Location(source.path.rstrip("/") + "/" + origin_name, source.host, source.user,
                                      source.port)
                    self._rsync(source, destination, origin_name, ssh, chosen, replica_config, True)

            verified, repaired, failed = self._verify(ctx, key, destination, origin_name, files, expected, ssh,
                                                      repair)
            outcome.read += len(files)
            outcome.bytes += sum(expected[path].size for path in files if path in expected)
            outcome.verified += verified
            outcome.repaired += repaired
            outcome.elsewhere += sum(1 for path in sources if path not in failed)
            outcome.unknown += len(files) - verified - len(failed)
            outcome.failed += len(failed)
            outcome.failed_paths += failed[:3 - len(outcome.failed_paths)]
        return outcome

    @executor("trim")
    def trim_origin(self, action: Action, ctx: RunContext) -> str:
        """Remove origin files whose counted copies pass a check right now (trim.py)."""
        desired = ctx.desired
        name = action.address.split(":", 1)[1]
        origin = desired.origins.get(name)
        if origin is None or origin.trim is None:
            raise ApplyError(f"{action.address}: no trim is configured for origin {name} any more; nothing removed")
        min_copies = origin.trim.min_copies
        now = inventory.now_utc()
        counted: dict[str, datetime] = {}
        planned = TrimDetails.of(action)
        for key in planned.replicas:
            replica = desired.replicas.get(key)
            if replica is not None and replica.scrub_every is not None and name in origins_of(desired, replica):
                counted[key] = now - replica.scrub_every
        locations = {key: replica_location(key, ctx.base_dir) for key in counted}
        ssh = connections.shared(desired.ssh.settings(), [origin.location, *locations.values()])
        for key, location in locations.items():  # the right disks, mounted: else nothing is removed
            self._ensure_marker(ctx, key, location, ssh)
        removed = removed_bytes = 0
        kept: list[str] = []
        for batch in trim.batches(planned.files):
            with ctx.state.engine.begin() as connection:
                proofs = trim.proofs(connection, name, batch, counted)
            names = {path: paths.to_bytes(path) for path in batch}
            on_origin = trim.stat_files(origin.location, ssh, origin.location.path, list(names.values()))
            passing = dict.fromkeys(batch, 0)
            for key, location in locations.items():
                held = [path for path in batch if path in proofs and key in proofs[path].copies]
                if not held:
                    continue
                held_names = [names[path] for path in held]
                stats = trim.stat_files(location, ssh, location.path.rstrip("/") + "/" + name, held_names)
                digests = hashing.hash_files(location, ssh, name, held_names, ApplyError)
                good, bad = [], []
                for path in held:
                    size, mtime_ns, digest = proofs[path].copies[key]
                    found, found_digest = stats.get(names[path]), digests.get(names[path])
                    if (found is not None and found[0] == size and trim.same_second(found[1], mtime_ns)
                            and found_digest == digest == proofs[path].sha256):
                        good.append((path, digest))
                        passing[path] += 1
                    elif found_digest != digest:
                        bad.append((path, found_digest))
                with ctx.state.engine.begin() as connection:
                    inventory.mark_checked(connection, key, name, good, bad)
            chosen = []
            for path in batch:
                proof, there = proofs.get(path), on_origin.get(names[path])
                if (proof is not None and passing[path] >= min_copies and there is not None
                        and there[0] == proof.size and trim.same_second(there[1], proof.mtime_ns)):
                    chosen.append(path)
                else:
                    kept.append(path)
            if not chosen:
                continue
            with ctx.state.engine.begin() as connection:  # recorded first: a kill leaves it found present again
                trim.mark_trimmed(connection, name, chosen, now)
            try:
                trim.delete_files(origin.location, ssh, [names[path] for path in chosen])
            except ApplyError:
                with ctx.state.engine.begin() as connection:
                    trim.mark_trimmed(connection, name, chosen, None)
                raise
            removed += len(chosen)
            removed_bytes += sum(proofs[path].size for path in chosen)
        text = (f"removed {removed:,} files ({removed_bytes:,} bytes) from origin {name}, each with at least "
                f"{min_copies} copies checked again just now")
        if kept:
            raise ApplyError(f"{action.address}: {text}; kept {len(kept):,} (e.g. {', '.join(kept[:3])}): their "
                             "copies or the origin file did not pass the check again")
        return text

    @executor("mark")
    def mark(self, action: Action, ctx: RunContext) -> str:
        key = action.address.split(":", 1)[1]
        location = replica_location(key, ctx.base_dir)
        ssh = connections.shared(ctx.desired.ssh.settings(), [location])
        self._ensure_marker(ctx, key, location, ssh)
        return f"wrote {location}/{marker.MARKER}"

    @executor("enroll")
    def enroll(self, action: Action, ctx: RunContext) -> str:
        replica = action.address.split(":", 1)[1]
        details = EnrollDetails.of(action)
        rows = list(zip(details.files, details.sizes, details.mtimes_ns, strict=True))
        self._enroll(ctx, replica, details.origin, rows)
        with ctx.state.engine.begin() as connection:
            inventory.touch_replica(connection, replica, verify=inventory.now_utc())
        return f"enrolled {len(rows):,} files"

    @staticmethod
    def _enroll(ctx: RunContext, replica: str, origin: str, rows: list[tuple[str, int, int]]) -> None:
        scan_id = inventory.new_scan_id()
        try:
            with ctx.state.engine.begin() as connection:
                inventory.load_paths(connection, scan_id, rows)
                inventory.record_copies(connection, replica, origin, scan_id, enrolled=True)
        finally:
            with ctx.state.engine.begin() as connection:
                inventory.drop_scan(connection, scan_id)

    # --- commands -----------------------------------------------------------------------------

    def commands(self) -> list[Any]:
        from reconciler.kinds.replicas.commands import inventory_group, replicas_group

        return [replicas_group, inventory_group]

    def report_section(self, desired: Any, ctx: ReportContext) -> ReportSection:
        from reconciler.kinds.replicas import report

        return report.section(desired, ctx)

    def measure(self, desired: Any, ctx: RunContext) -> list[Measure]:
        from reconciler.kinds.replicas import report

        return report.measure(desired, ctx.state, ctx.base_dir)


