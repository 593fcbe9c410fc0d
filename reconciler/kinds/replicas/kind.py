"""The replicas resource kind: origins' files copied to every replica, inventory kept.

Observe: scan each origin into the inventory (fast path for immutable origins),
probe each replica's root, and list replicas whose verification is due or that
enrol existing backups. Diff (diff.py, pure): copy / enroll actions. Apply:
one rsync per copy action; records written only for files rsync delivered.
"""

from __future__ import annotations

import os
import shlex
import time
from itertools import accumulate
from pathlib import Path
from typing import Any

import sh
from pydantic import Field

from reconciler.config.model import resolve_path
from reconciler.engine import memo
from reconciler.engine.actions import Action, AddressMessage
from reconciler.engine.kind import ConfigPath, Diff, Kind, Observation, RunContext, executor
from reconciler.engine.planner import matches_target
from reconciler.errors import ApplyError, ObserveError
from reconciler.kinds.replicas import connections, inventory, paths
from reconciler.kinds.replicas.config import OriginConfig, ReplicaConfig, SshSection, unsafe_origin_name
from reconciler.kinds.replicas.diff import (
    PairFacts,
    ReplicaFacts,
    copy_precondition,
    diff_replicas,
    enrollable,
    replica_address,
)
from reconciler.kinds.replicas.listing import Entry, make_matcher, require
from reconciler.kinds.replicas.local_walk import walk_local
from reconciler.kinds.replicas.location import Location, SshSettings
from reconciler.kinds.replicas.memo import replicas_memo
from reconciler.kinds.replicas.remote_walk import walk_remote
from reconciler.kinds.replicas.rsync import argument_budget, copy_invocation, plan_batches, run_copies
from reconciler.kinds.replicas.tables import (
    OriginFile,
    OriginStatus,
    PairStatus,
    ReplicaCopy,
    ReplicaStatus,
    ScanEntry,
    ScannedDir,
)


def replica_location(key: str, base_dir: Path) -> Location:
    """A replica's key as a location; local keys resolve like every path in the config."""
    location = Location.parse(key)
    return location if location.is_remote else Location(resolve_path(location.path, base_dir))


def _origins_of(desired: Any, replica: ReplicaConfig) -> list[str]:
    return list(replica.origins) if replica.origins is not None else list(desired.origins)


class ReplicasKind(Kind):
    name = "replicas"
    address_prefix = "replica"
    sections = {
        "origins": (dict[str, OriginConfig], Field(default_factory=dict, description="Trees of instrument files.")),
        "replicas": (
            dict[str, ReplicaConfig],
            Field(default_factory=dict, description='Where copies must exist: key = local path or "ssh://host/path".'),
        ),
        "ssh": (SshSection, Field(default_factory=SshSection, description=SshSection.__doc__)),
    }
    tables = [OriginFile, ReplicaCopy, ScannedDir, OriginStatus, ReplicaStatus, PairStatus, ScanEntry]
    schema_version = 2
    migrations = {1: inventory.add_directory_digests}

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
        needed_origins = {name for rep in wanted.values() for name in _origins_of(desired, rep)}
        with ctx.state.engine.begin() as connection:
            inventory.sweep_old_scans(connection)
        origin_errors: dict[str, str] = {}
        for name, origin in desired.origins.items():
            if ctx.targets and name not in needed_origins:
                continue
            try:
                self._scan_origin(ctx, name, origin, ssh, now_ns, full_scan)
            except ObserveError as error:
                origin_errors[name] = str(error)
        for key, replica in wanted.items():
            address = replica_address(key)
            location = replica_location(key, ctx.base_dir)
            try:
                self._probe(location, ssh)
                pairs = self._observe_replica(ctx, desired, key, replica, location, ssh, full_scan, origin_errors)
            except ObserveError as error:
                facts.errors.append(AddressMessage(address=address, message=str(error)))
                continue
            facts.pairs.extend(pairs)
            for name in _origins_of(desired, replica):
                if name in origin_errors:
                    facts.errors.append(AddressMessage(address=address,
                                                       message=f"origin {name}: {origin_errors[name]}"))
        no_change_memo = None
        if memo.wanted(ctx.state, ctx.targets) and not origin_errors and not facts.errors:
            replicas = {key: (replica, replica_location(key, ctx.base_dir), _origins_of(desired, replica))
                        for key, replica in wanted.items()}
            with ctx.state.engine.begin() as connection:
                no_change_memo = replicas_memo(connection, desired, replicas)
        return Observation(facts=facts, errors=[], memo=no_change_memo)

    def _scan_origin(self, ctx: RunContext, name: str, origin: OriginConfig, ssh: SshSettings, now_ns: int,
                     full_scan: bool) -> None:
        location = origin.location
        matcher = make_matcher(origin.include, origin.exclude)
        cutoff = now_ns - int(origin.settle.total_seconds() * 1e9)
        with ctx.state.engine.begin() as connection:
            status = inventory.origin_status(connection, name)
            due = status.last_full_scan is None or (
                inventory.now_utc() - inventory.as_utc(status.last_full_scan) >= origin.full_scan_every)
            fast = origin.immutable and not full_scan and not due
            known = inventory.known_dirs(connection, name)

        if location.is_remote:
            entries = walk_remote(location, ssh, matcher, cutoff, known, fast=fast)
        else:
            entries = walk_local(location.path, matcher, cutoff, known, fast=fast, jobs=origin.scan_jobs)
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

    def _probe(self, location: Location, ssh: SshSettings) -> None:
        """A replica's root must exist and be writable: a missing mount is never taken for an empty disk."""
        if not location.is_remote:
            if not os.path.isdir(location.path):
                raise ObserveError(f"{location.path} does not exist or is not a directory; create or mount it "
                                   "(reconciler never creates a replica's root)")
            if not os.access(location.path, os.W_OK | os.X_OK):
                raise ObserveError(f"{location.path}: permission denied (not writable by this user)")
            return
        quoted = shlex.quote(location.path)
        command = f"test -d {quoted} || exit 3; test -w {quoted} || exit 4"
        try:
            sh.Command(require("ssh", "openssh-client"))(*location.ssh_args(ssh)[1:], command)
        except sh.ErrorReturnCode as error:
            if error.exit_code == 3:
                raise ObserveError(f"{location} does not exist or is not a directory; create or mount it") from None
            if error.exit_code == 4:
                raise ObserveError(f"{location}: permission denied (not writable)") from None
            lines = error.stderr.decode("utf-8", "replace").strip().splitlines()
            raise ObserveError(f"cannot reach {location.destination} over ssh: "
                               f"{lines[-1] if lines else f'exit {error.exit_code}'}") from None

    def _observe_replica(self, ctx: RunContext, desired: Any, key: str, replica: ReplicaConfig, location: Location,
                         ssh: SshSettings, full_scan: bool, origin_errors: dict[str, str]) -> list[PairFacts]:
        origin_names = [name for name in _origins_of(desired, replica) if name not in origin_errors]
        with ctx.state.engine.begin() as connection:
            status = inventory.replica_status(connection, key)
        last_verify = status.last_verify
        now = inventory.now_utc()
        verify_due = replica.verify_every is not None and (
            last_verify is None or full_scan or now - inventory.as_utc(last_verify) >= replica.verify_every)
        enroll_due = replica.import_origins and (last_verify is None or full_scan or verify_due)
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
                for name in origin_names:
                    pair = pairs[name]
                    generation = inventory.origin_status(connection, name).generation
                    if (not listed and not pair.drift and
                            inventory.pair_complete_generation(connection, key, name) == generation):
                        continue
                    pair.candidates = inventory.candidates(connection, key, name)
                    if not pair.candidates:
                        inventory.set_pair_complete(connection, key, name, generation)
                    elif pair.drift:
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
        wanted = set(action.details["files"])
        for pair in facts.pairs:
            if pair.replica == replica and pair.origin == action.details["origin"]:
                paths = pair.candidates.paths
                indices = [index for index, path in enumerate(paths) if path in wanted]
                return copy_precondition(replica, pair.origin, pair.candidates, indices)
        return None

    # --- apply --------------------------------------------------------------------------------

    @executor("copy")
    def copy(self, action: Action, ctx: RunContext) -> str:
        desired = ctx.desired
        replica = action.address.split(":", 1)[1]
        origin_name = action.details["origin"]
        origin = desired.origins.get(origin_name)
        if origin is None:
            raise ApplyError(f"{action.address}: origin {origin_name} is no longer in the config; run plan again")
        source = origin.location
        destination = replica_location(replica, ctx.base_dir)
        ssh = connections.shared(desired.ssh.settings(), [source, destination])
        files: list[str] = action.details["files"]
        replica_config = desired.replicas.get(replica) or ReplicaConfig()
        invocation = copy_invocation(source, destination, origin_name, ssh, replica_config.bwlimit_kib())
        batches = plan_batches([paths.to_bytes(path) for path in files], replica_config.copy_batch_files,
                               argument_budget(), first_limit=1 if replica_config.copy_jobs > 1 else None)
        starts = list(accumulate((len(batch) for batch in batches), initial=0))

        label = f"copy {action.address} from {origin_name}"

        def record(index: int, delivered: list[bytes] | None) -> None:
            # A whole batch is recorded by the plan's own paths (batches are slices of them).
            copied = (files[starts[index]:starts[index + 1]] if delivered is None
                      else [paths.to_text(name) for name in delivered])
            with ctx.state.engine.begin() as connection:
                inventory.record_copied(connection, replica, origin_name, copied)

        result = run_copies(invocation, batches, replica_config.copy_jobs,
                            lambda done, total: ctx.progress(label, done, total), record)
        ctx.progress(label, result.delivered, len(files))
        with ctx.state.engine.begin() as connection:
            inventory.touch_replica(connection, replica, sync=inventory.now_utc())
        if result.error is not None:
            raise ApplyError(f"{action.address}: {result.error}; {result.delivered:,} of {len(files):,} files "
                             "copied and recorded, the next run retries the rest")
        if not result.complete:
            raise ApplyError(f"{action.address}: {result.delivered:,} of {len(files):,} files copied; "
                             f"{result.warning}; the next run retries the rest")
        return (f"copied {len(files):,} files ({result.transferred:,} transferred, the rest already there) "
                f"with {len(batches):,} rsync run{'s' if len(batches) != 1 else ''}")

    @executor("enroll")
    def enroll(self, action: Action, ctx: RunContext) -> str:
        replica = action.address.split(":", 1)[1]
        details = action.details
        rows = list(zip(details["files"], details["_sizes"], details["_mtimes_ns"], strict=True))
        self._enroll(ctx, replica, details["origin"], rows)
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


