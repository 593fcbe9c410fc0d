"""Running rsync: argument lists built by pure functions, one process per batch,
per-file results parsed from its output."""

from __future__ import annotations

import ctypes
import os
import re
import shlex
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

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


def copy_invocation(source: Location, destination: Location, origin: str, ssh: SshSettings,
                    subdir: str = "") -> Invocation:
    """The command that copies files of ``source`` into ``<destination>/<origin>/``
    (of ``<source>/<subdir>`` into ``<destination>/<origin>/<subdir>`` with ``subdir``).

    Local to local and one remote end run rsync here (over ssh for the remote end);
    remote to remote runs rsync on the origin host through ssh, which then reaches
    the replica host with the origin host's own ssh setup.
    """
    below = "/" + subdir if subdir else ""
    source = Location(source.path.rstrip("/") + below, source.host, source.user, source.port)
    target = Location(destination.path.rstrip("/") + "/" + origin + below, destination.host, destination.user,
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
    meaning = EXIT_MEANINGS.get(code, "see rsync(1), EXIT VALUES")
    return ApplyError(f"rsync failed with exit {code} ({meaning}): {last_words(code, errors)}")


def last_words(code: int, errors: list[str]) -> str:
    """rsync's last line on stderr, or its exit code when it said nothing."""
    return errors[-1] if errors else f"exit {code}"


@dataclass(frozen=True)
class Batch:
    """Files that one rsync copies: ``names`` relative to ``subdir`` of the origin ("" = its root)."""

    subdir: str
    names: list[bytes]

    @cached_property
    def _prefix(self) -> bytes:
        return os.fsencode(self.subdir) + b"/" if self.subdir else b""

    def full(self, name: bytes) -> bytes:
        return self._prefix + name


_PLAIN_DIR = re.compile(rb"[A-Za-z0-9_.+=@,-]+(/[A-Za-z0-9_.+=@,-]+)*")


def plan_batches(files: list[bytes], own_batch_from: int = 256, limit: int = 20_000) -> list[Batch]:
    """Split one copy into rsync batches.

    A directory with at least ``own_batch_from`` files gets batches of its own,
    run from inside it: rsync >= 3.4 resolves every ``--files-from`` path one
    component at a time, and one rsync's whole list is one flat file list, so
    short names in lists of bounded size is what keeps a large copy as cheap
    as a recursive rsync. The other files go, by full path, into batches run
    from the origin's root. Directories whose names are not plain (spaces,
    newlines, non-UTF-8 bytes, a leading dash) stay in those too: their paths
    only ever travel NUL-separated in the file list, never in an argument.
    Every batch holds at most ``limit`` files.
    """
    by_dir: dict[bytes, list[bytes]] = {}
    for path in files:
        parent, _, name = path.rpartition(b"/")
        by_dir.setdefault(parent, []).append(name)
    batches: list[Batch] = []
    rest: list[bytes] = []
    for parent, names in by_dir.items():
        if parent and len(names) >= own_batch_from and _PLAIN_DIR.fullmatch(parent) and not parent.startswith(b"-"):
            subdir = parent.decode("ascii")
            batches.extend(Batch(subdir, names[start:start + limit]) for start in range(0, len(names), limit))
        else:
            rest.extend(parent + b"/" + name if parent else name for name in names)
    batches.extend(Batch("", rest[start:start + limit]) for start in range(0, len(rest), limit))
    return batches


@dataclass
class CopyResult:
    delivered: list[bytes] = field(default_factory=list)  # on the replica now (full relative paths)
    transferred: int = 0  # of those, how many rsync actually sent (the rest were there already)
    complete: bool = True  # every file of the copy is on the replica
    warning: str | None = None  # why not (rsync exit 23/24 in some batch)
    error: ApplyError | None = None  # a batch failed outright: its files are not counted as delivered


def run_copies(batches: list[tuple[Invocation, Batch]], jobs: int = 1,
               progress: Callable[[int, int], None] | None = None) -> CopyResult:
    """Run one rsync per batch, ``jobs`` at a time, and report what arrived.

    A batch that exits 0 delivered all its files; exit 23/24 only the files rsync
    printed. Any other exit is ``error`` (rsync's last words and what the code
    means); no new batch starts after one, and the files of batches that
    finished are still reported, so the caller can record them.
    """
    result = CopyResult()
    total = sum(len(batch.names) for _, batch in batches)
    lock = threading.Lock()
    stop = threading.Event()

    def run_one(invocation: Invocation, batch: Batch) -> None:
        if stop.is_set():
            return
        printed: list[bytes] = []

        def on_name(name: bytes) -> None:
            printed.append(name)
            with lock:
                result.transferred += 1
                if progress:
                    progress(result.transferred, total)

        try:
            code, errors = run_rsync(invocation.argv, b"".join(name + b"\0" for name in batch.names), on_name)
        except ApplyError as error:
            code, error_found = -1, error
        else:
            error_found = None if code == 0 or code in PARTIAL_CODES else failure(code, errors)
        with lock:
            if code == 0:
                result.delivered.extend(batch.full(name) for name in batch.names)
            elif error_found is None:
                result.delivered.extend(batch.full(name) for name in printed)
                result.complete = False
                result.warning = result.warning or (
                    f"rsync exit {code} ({PARTIAL_CODES[code]}): {last_words(code, errors)}")
            else:
                result.complete = False
                result.error = result.error or error_found
                stop.set()

    if jobs <= 1 or len(batches) <= 1:
        for invocation, batch in batches:
            run_one(invocation, batch)
        return result
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="rsync") as pool:
        for future in [pool.submit(run_one, invocation, batch) for invocation, batch in batches]:
            future.result()
    return result
