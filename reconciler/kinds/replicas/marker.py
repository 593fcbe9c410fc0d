"""The replica marker: ``<replica root>/.reconciler-replica`` holding an id the state records.

A mount point without its disk is an empty directory, indistinguishable from an emptied
replica by its listing alone. The marker tells them apart: once a replica holds files,
its root must hold the marker with the id the state recorded when it was written. An
empty directory (no marker) where a known replica was is never taken for the replica
and never filled: a removable replica is *offline*, any other is an error for its
address. A brand-new replica (nothing recorded) gets its marker on its first apply.

``probe`` reads (observers); ``write`` and ``ensure`` write (executors). ``judge`` is pure.
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
        return Probe(True, writable, parse(content) if content is not None else None, content is not None, dirs)
    root = shlex.quote(location.path)
    tests = "".join(f"test -d {shlex.quote(name)} && printf '%s\\n' {shlex.quote(name)}; " for name in origins)
    command = (f"test -d {root} || exit 3; cd {root} || exit 3; w=0; test -w . && w=1; echo $w; "
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
    has_marker, _, content = rest.partition(b"\n")
    marker_file = has_marker.strip() == b"1"
    dirs = {line.decode("utf-8", "replace") for line in tail.splitlines() if line}
    return Probe(True, writable_flag.strip() == b"1", parse(content) if marker_file else None, marker_file, dirs)


@dataclass
class Judgement:
    """What a probe means for a replica: ``state`` is "ok", "offline" or "error";
    ``message`` says why (offline, error); ``write_marker`` when the next apply writes one;
    ``adopt`` is a marker id found at the root that the state does not record yet."""

    state: str
    message: str = ""
    write_marker: bool = False
    adopt: str | None = None


def judge(probe: Probe, where: str, recorded: str | None, holds_files: bool, removable: bool) -> Judgement:
    """Pure: whether ``probe`` of the replica at ``where`` is the replica the state knows."""
    def absent(message: str) -> Judgement:
        if removable:
            return Judgement("offline", message)
        return Judgement("error", message)

    if not probe.present:
        return absent(f"{where} does not exist or is not a directory; create or mount it "
                      "(reconciler never creates a replica's root)")
    if recorded is not None:
        if probe.marker == recorded:
            return Judgement("ok") if probe.writable else Judgement(
                "error", f"{where}: permission denied (not writable by this user)")
        if probe.marker is None:
            return absent(f"{where} holds no replica marker {MARKER} although the state records "
                          "copies there: is its disk unmounted? (an empty mount point is never "
                          "filled; mount the disk)")
        return Judgement("error", f"{where} holds the marker of another replica ({MARKER} id {probe.marker}, "
                                  f"the state records {recorded}): another disk is mounted there; mount the right one")
    # Nothing recorded yet: a new replica, or one the state knew before markers existed.
    if probe.marker_file and probe.marker is None:
        return Judgement("error", f"{where}/{MARKER} is not a reconciler replica marker; move it away")
    if holds_files and probe.marker is None and not probe.origin_dirs:
        return absent(f"{where} is empty although the state records copies there: is its disk "
                      "unmounted? (an empty mount point is never filled; mount the disk)")
    if not probe.writable:
        return Judgement("error", f"{where}: permission denied (not writable by this user)")
    if probe.marker is not None:
        return Judgement("ok", adopt=probe.marker)
    return Judgement("ok", write_marker=True)


def write(location: Location, ssh: SshSettings, marker_id: str) -> str:
    """Create the marker with ``marker_id`` unless the root already holds one; returns the id
    the root holds now. Atomic (a complete file is linked into place, never overwritten), so
    a run killed here leaves either no marker or a whole one. Raises ApplyError when the root
    is absent: rsync would create it, and a missing mount point must stay missing."""
    content = f"{HEADER} {marker_id}\n".encode()
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
    command = (f"test -d {root} || exit 3; cd {root} && printf '%s\\n' {shlex.quote(f'{HEADER} {marker_id}')} "
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
