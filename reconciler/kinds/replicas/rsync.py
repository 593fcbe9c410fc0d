"""Running rsync: argument lists built by pure functions, one process per batch,
per-file results parsed from its output."""

from __future__ import annotations

import ctypes
import re
import shlex
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import sh

from reconciler.errors import ApplyError
from reconciler.kinds.replicas.listing import require
from reconciler.kinds.replicas.location import Location, SshSettings

PARTIAL_DIR = ".rsync-partial"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# rsync exit codes (rsync(1) "EXIT VALUES") that still leave some files transferred.
PARTIAL_CODES = {23: "some files could not be transferred", 24: "some source files vanished before they were copied"}
EXIT_MEANINGS = {
    1: "syntax or usage error",
    2: "protocol incompatibility",
    3: "errors selecting input/output files or directories",
    5: "error starting client-server protocol",
    10: "error in socket I/O",
    11: "error in file I/O (is the replica full or read-only?)",
    12: "error in the rsync protocol data stream (did the connection drop?)",
    20: "interrupted by a signal",
    30: "timeout in data send/receive",
    35: "timeout waiting for daemon connection",
    255: "ssh could not connect",
}
_ESCAPE = re.compile(rb"\\#([0-7]{3})")


def rsync_options(ssh_shell: str | None) -> list[str]:
    """Options of every copy: archive mode, the file list from stdin (NUL-separated),
    partial files kept out of final names, missing destination directories created,
    one output line per transferred file."""
    options = ["-a", "--from0", "--files-from=-", f"--partial-dir={PARTIAL_DIR}", "--mkpath", "--out-format=%n"]
    if ssh_shell:
        options += ["-e", ssh_shell]
    return options


@dataclass(frozen=True)
class Invocation:
    """A program and its arguments; ``argv[0]`` is the program."""

    argv: list[str]


def copy_invocation(source: Location, destination: Location, origin: str, ssh: SshSettings) -> Invocation:
    """The command that copies files of ``source`` into ``<destination>/<origin>/``.

    Local to local and one remote end run rsync here (over ssh for the remote end);
    remote to remote runs rsync on the origin host through ssh, which then reaches
    the replica host with the origin host's own ssh setup.
    """
    target = Location(destination.path.rstrip("/") + "/" + origin, destination.host, destination.user,
                      destination.port)
    if source.is_remote and destination.is_remote:
        hop = ["ssh", "-o", "BatchMode=yes", *[arg for option in ssh.options for arg in ("-o", option)]]
        if target.port:
            hop += ["-p", str(target.port)]
        inner = ["rsync", *rsync_options(" ".join(shlex.quote(arg) for arg in hop)),
                 source.rsync_spec().split(":", 1)[1], target.rsync_spec()]
        return Invocation([*source.ssh_args(ssh), " ".join(shlex.quote(part) for part in inner)])
    remote = source if source.is_remote else destination if destination.is_remote else None
    shell = remote.rsync_shell(ssh) if remote else None
    return Invocation(["rsync", *rsync_options(shell), source.rsync_spec(), target.rsync_spec()])


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to send SIGTERM when reconciler dies (even by
    kill -9), so an orphaned rsync stops, removes its temporary file, and never races the
    next run. Elsewhere a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def unescape(line: bytes) -> bytes:
    """rsync writes unprintable bytes of names as ``\\#ooo`` (octal); undo that."""
    return _ESCAPE.sub(lambda match: bytes([int(match.group(1), 8)]), line)


@dataclass
class CopyResult:
    transferred: list[bytes] = field(default_factory=list)
    exit_code: int = 0
    complete: bool = True  # every file of the batch is on the replica
    warning: str | None = None


def run_rsync(argv: list[str], stdin: bytes, on_name: Callable[[bytes], None]) -> tuple[int, list[str]]:
    """Run an rsync (or an ssh that runs one) with ``--out-format=%n``: ``on_name`` gets each
    transferred name (unescaped, directories skipped). Returns (exit code, stderr lines).
    The child dies with reconciler (see ``_die_with_parent``).

    Raises ApplyError when it was killed by a signal, ToolMissingError when absent.
    """
    program = argv[0]
    executable = require(program, "rsync" if program == "rsync" else "openssh-client")
    errors: list[str] = []
    pending = b""

    def on_chunk(chunk: str) -> None:
        nonlocal pending
        pending += chunk.encode("latin-1")
        *lines, pending = pending.split(b"\n")
        for line in lines:
            name = unescape(line)
            if name and not name.endswith(b"/"):
                on_name(name)

    try:
        process = sh.Command(executable)(
            *argv[1:],
            _in=stdin,
            _out=on_chunk,
            _err=lambda line: errors.append(line.rstrip("\n")),
            _encoding="latin-1",
            _out_bufsize=1 << 16,
            _ok_code=list(range(256)),
            _bg=True,
            _preexec_fn=_die_with_parent,
        )
        process.wait()
    except sh.SignalException as error:
        raise ApplyError(f"rsync was killed by signal {-error.exit_code}") from None
    return process.exit_code, errors


def failure(code: int, errors: list[str]) -> ApplyError:
    """The error of an rsync that failed with ``code``: its last words and what the code means."""
    reason = errors[-1] if errors else f"exit {code}"
    meaning = EXIT_MEANINGS.get(code, "see rsync(1), EXIT VALUES")
    return ApplyError(f"rsync failed with exit {code} ({meaning}): {reason}")


def run_copy(invocation: Invocation, files: list[bytes],
             progress: Callable[[int, int], None] | None = None) -> CopyResult:
    """Run one rsync over ``files`` (relative paths, bytes) and report what arrived.

    Exit 0: every file of ``files`` is on the replica. Exit 23/24: only the files
    rsync printed are known to have arrived (``complete`` is False). Anything
    else raises ApplyError with rsync's own last words and what its exit code means.
    """
    result = CopyResult()

    def on_name(name: bytes) -> None:
        result.transferred.append(name)
        if progress:
            progress(len(result.transferred), len(files))

    code, errors = run_rsync(invocation.argv, b"".join(name + b"\0" for name in files), on_name)
    result.exit_code = code
    if code == 0:
        return result
    if code in PARTIAL_CODES:
        result.complete = False
        reason = errors[-1] if errors else f"exit {code}"
        result.warning = f"rsync exit {code} ({PARTIAL_CODES[code]}): {reason}"
        return result
    raise failure(code, errors)
