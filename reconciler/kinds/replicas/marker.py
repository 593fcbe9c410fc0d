"""The replica marker: ``<replica root>/.reconciler-replica`` holding an id the state records.

A mount point without its disk is an empty directory, indistinguishable from an emptied
replica by its listing alone. The marker tells them apart: once a replica holds files,
its root must hold the marker with the id the state recorded when it was written. An
empty directory (no marker) where a known replica was is never taken for the replica
and never filled: a removable replica is *offline*, any other is an error for its
address. A brand-new replica (nothing recorded) gets its marker on its first apply.

The marker alone cannot tell a replica's disk from another disk onto which the replica, marker
included, was copied (or a copy of the marker alone). So the state also records the device
identity of the root's file system when it first sees the marker: ``fsid:<f_fsid>`` (what
``stat -f -c %i`` prints; for ext4 and btrfs derived from the file system's UUID, so it
survives remounts and another device name; for XFS it follows the device number). A root
holding the right marker on another file system is an error naming both; the marker file
also carries the identity it was written on, for the operator to read.

``probe`` reads (observers); ``write`` writes (executors). ``judge`` and ``check`` are pure.
"""

from __future__ import annotations

import os
import shlex
import uuid
from dataclasses import dataclass, field

import sh

from reconciler.errors import ApplyError, ObserveError
from reconciler.providers.location import Location, SshSettings
from reconciler.providers.process import require

MARKER = ".reconciler-replica"
HEADER = "reconciler-replica"


def new_id() -> str:
    return uuid.uuid4().hex


def local_device(path: str) -> str:
    """The device identity of the file system holding ``path``, as ``stat -f -c %i`` prints it."""
    fsid = os.statvfs(path).f_fsid
    return f"fsid:{fsid & 0xFFFFFFFF:08x}{(fsid >> 32) & 0xFFFFFFFF:08x}"


def parse_device(text: bytes) -> str | None:
    """The identity printed by the remote probe (``fsid:`` and hex digits), None when unknown."""
    value = text.decode("ascii", "replace").strip()
    return value if value.startswith("fsid:") and len(value) > len("fsid:") else None


def parse(content: bytes) -> str | None:
    """The id in a marker file's content ("reconciler-replica <id>"), or None when it holds none."""
    words = content.decode("utf-8", "replace").split()
    return words[1] if len(words) >= 2 and words[0] == HEADER else None


@dataclass
class Probe:
    """A replica root as found: present (a directory), writable, its marker's id (None: no
    marker), whether it held a marker file at all, and which of its origins' directories it holds."""

    present: bool
    writable: bool = False
    marker: str | None = None
    marker_file: bool = False
    origin_dirs: set[str] = field(default_factory=set)
    device: str | None = None  # the device identity of its file system (None: unknown)


def probe(location: Location, ssh: SshSettings, origins: list[str]) -> Probe:
    """Look at a replica's root (one ssh call when remote). Raises ObserveError when an ssh
    host cannot be reached: an unreachable host is not an absent disk."""
    if not location.is_remote:
        if not os.path.isdir(location.path):
            return Probe(present=False)
        writable = os.access(location.path, os.W_OK | os.X_OK)
        try:
            with open(os.path.join(location.path, MARKER), "rb") as stream:
                content: bytes | None = stream.read(4096)
        except FileNotFoundError:
            content = None
        except OSError as error:
            raise ObserveError(f"{location.path}/{MARKER}: {error.strerror}") from None
        dirs = {name for name in origins if os.path.isdir(os.path.join(location.path, name))}
        return Probe(True, writable, parse(content) if content is not None else None, content is not None, dirs,
                     local_device(location.path))
    root = shlex.quote(location.path)
    tests = "".join(f"test -d {shlex.quote(name)} && printf '%s\\n' {shlex.quote(name)}; " for name in origins)
    command = (f"test -d {root} || exit 3; cd {root} || exit 3; w=0; test -w . && w=1; echo $w; "
               "printf 'fsid:%s\\n' \"$(stat -f -c %i . 2>/dev/null)\"; "
               f"if test -f {MARKER}; then echo 1; head -c 4096 {MARKER}; else echo 0; fi; printf '\\n\\036\\n'; "
               f"{tests}exit 0")
    try:
        output = sh.Command(require("ssh", "openssh-client"))(*location.ssh_args(ssh)[1:], command,
                                                              _encoding="latin-1")
    except sh.ErrorReturnCode as error:
        if error.exit_code == 3:
            return Probe(present=False)
        lines = error.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ObserveError(f"cannot reach {location.destination} over ssh: "
                           f"{lines[-1] if lines else f'exit {error.exit_code}'}") from None
    head, _, tail = str(output).encode("latin-1").partition(b"\n\x1e\n")
    writable_flag, _, rest = head.partition(b"\n")
    device, _, rest = rest.partition(b"\n")
    has_marker, _, content = rest.partition(b"\n")
    marker_file = has_marker.strip() == b"1"
    dirs = {line.decode("utf-8", "replace") for line in tail.splitlines() if line}
    return Probe(True, writable_flag.strip() == b"1", parse(content) if marker_file else None, marker_file, dirs,
                 parse_device(device))


@dataclass
class Judgement:
    """What a probe means for a replica: ``state`` is "ok", "offline" or "error";
    ``message`` says why (offline, error); ``write_marker`` when the next apply writes one;
    ``adopt`` is a marker id found at the root that the state does not record yet; ``device``
    a device identity to record (the state has none yet)."""

    state: str
    message: str = ""
    write_marker: bool = False
    adopt: str | None = None
    device: str | None = None


def check(probe: Probe, where: str, recorded: str, recorded_device: str | None, owner: str | None = None
          ) -> str | None:
    """Pure: why the root is not the replica whose marker id the state records as ``recorded``
    and whose device identity as ``recorded_device`` (None: not recorded yet, not checked), or
    None when it is. ``owner`` is the replica the state records the root's marker id for, when
    it is another's."""
    if probe.marker == recorded:
        if recorded_device is not None and probe.device is not None and probe.device != recorded_device:
            return (f"{where} holds this replica's marker ({MARKER} id {recorded}) on another file system "
                    f"(device {probe.device}; the state records the replica on {recorded_device}): a copy of "
                    "the replica or of its marker, not its disk; mount the replica's own disk (if the replica "
                    "moved to this disk on purpose: reconciler replicas forget, and it is taken as a new replica)")
        return None
    if probe.marker is None:
        return None
    whose = f"replica {owner}" if owner is not None else "another replica"
    return (f"{where} holds the marker of {whose} ({MARKER} id {probe.marker}; the state records id {recorded} "
            "for this replica): another disk is mounted there; mount the right one")


def judge(probe: Probe, where: str, recorded: str | None, holds_files: bool, removable: bool,
          recorded_device: str | None = None, owner: str | None = None) -> Judgement:
    """Pure: whether ``probe`` of the replica at ``where`` is the replica the state knows (its
    marker id ``recorded``, on the file system ``recorded_device``; ``owner``: the replica whose
    id the root's marker holds, when the state knows it)."""
    def absent(message: str) -> Judgement:
        if removable:
            return Judgement("offline", message)
        return Judgement("error", message)

    if not probe.present:
        return absent(f"{where} does not exist or is not a directory; create or mount it "
                      "(reconciler never creates a replica's root)")
    if recorded is not None:
        if probe.marker is None:
            return absent(f"{where} holds no replica marker {MARKER} although the state records "
                          "copies there: is its disk unmounted? (an empty mount point is never "
                          "filled; mount the disk)")
        problem = check(probe, where, recorded, recorded_device, owner)
        if problem is not None:
            return Judgement("error", problem)
        if not probe.writable:
            return Judgement("error", f"{where}: permission denied (not writable by this user)")
        return Judgement("ok", device=probe.device if recorded_device is None else None)
    # Nothing recorded yet: a new replica, or one the state knew before markers existed.
    if probe.marker_file and probe.marker is None:
        return Judgement("error", f"{where}/{MARKER} is not a reconciler replica marker; move it away")
    if holds_files and probe.marker is None and not probe.origin_dirs:
        return absent(f"{where} is empty although the state records copies there: is its disk "
                      "unmounted? (an empty mount point is never filled; mount the disk)")
    if not probe.writable:
        return Judgement("error", f"{where}: permission denied (not writable by this user)")
    if probe.marker is not None:
        return Judgement("ok", adopt=probe.marker, device=probe.device)
    return Judgement("ok", write_marker=True)


def write(location: Location, ssh: SshSettings, marker_id: str, device: str | None = None) -> str:
    """Create the marker with ``marker_id`` (and the ``device`` identity it is written on, for
    the operator) unless the root already holds one; returns the id the root holds now. Atomic
    (a complete file is linked into place, never overwritten), so a run killed here leaves
    either no marker or a whole one. Raises ApplyError when the root
    is absent: rsync would create it, and a missing mount point must stay missing."""
    text = f"{HEADER} {marker_id}\n" + (f"device {device}\n" if device else "")
    content = text.encode()
    if not location.is_remote:
        if not os.path.isdir(location.path):
            raise ApplyError(f"{location.path} does not exist any more (unmounted?); nothing copied")
        final = os.path.join(location.path, MARKER)
        temporary = f"{final}.{os.getpid()}.tmp"
        with open(temporary, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(temporary, final)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
        with open(final, "rb") as stream:
            found = parse(stream.read(4096))
        if found is None:
            raise ApplyError(f"{final} is not a reconciler replica marker; move it away")
        return found
    root = shlex.quote(location.path)
    temporary = f"{MARKER}.$$.tmp"
    command = (f"test -d {root} || exit 3; cd {root} && printf '%s' {shlex.quote(text)} "
               f"> {temporary} && {{ ln {temporary} {MARKER} 2>/dev/null; rm -f {temporary}; cat {MARKER}; }}")
    try:
        output = sh.Command(require("ssh", "openssh-client"))(*location.ssh_args(ssh)[1:], command)
    except sh.ErrorReturnCode as error:
        if error.exit_code == 3:
            raise ApplyError(f"{location} does not exist any more (unmounted?); nothing copied") from None
        lines = error.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ApplyError(f"cannot write {location}/{MARKER}: {lines[-1] if lines else f'exit {error.exit_code}'}"
                         ) from None
    found = parse(str(output).encode())
    if found is None:
        raise ApplyError(f"{location}/{MARKER} is not a reconciler replica marker; move it away")
    return found
