"""Running rsync: argument lists built by pure functions, one process per batch,
per-file results parsed from its output."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shlex
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from reconciler.errors import ApplyError
from reconciler.providers.location import Location, SshSettings
from reconciler.providers.process import KilledBySignal, Streamed, require

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


def rsync_options(ssh_shell: str | None, names_as_arguments: bool = False, bwlimit_kib: int | None = None,
                  ignore_times: bool = False) -> list[str]:
    """Options of every copy: archive mode, paths kept relative to the source, partial files
    kept out of final names, missing destination directories created, one output line per
    transferred file. The names come NUL-separated on stdin (``--files-from=-``) or, with
    ``names_as_arguments``, as arguments; then recursion is off, as ``--files-from`` turns it
    off, so a name that became a directory is not copied whole. ``bwlimit_kib`` caps what the
    process sends, in KiB/s."""
    if names_as_arguments:
        listing = ["-a", "--relative", "--no-recursive", "--dirs"]
    else:
        listing = ["-a", "--from0", "--files-from=-"]
    options = [*listing, f"--partial-dir={PARTIAL_DIR}", "--mkpath", "--out-format=%n"]
    if bwlimit_kib:
        options.append(f"--bwlimit={bwlimit_kib}")
    if ignore_times:  # a repair: the bad copy has the right size and mtime, so rsync would skip it
        options.append("--ignore-times")
    if ssh_shell:
        options += ["-e", ssh_shell]
    return options


@dataclass(frozen=True)
class Invocation:
    """A program and its arguments (``argv[0]`` is the program), run with the batch's names
    on stdin or, when ``cwd`` is set, run there with the names as arguments before the last."""

    argv: list[str]
    cwd: str | None = None

    def command(self, names: list[bytes]) -> tuple[list[str | bytes], bytes]:
        """The argument list and stdin that copy ``names``."""
        if self.cwd is None:
            return list(self.argv), b"".join(name + b"\0" for name in names)
        # "./" keeps a name with a leading dash from reading as an option, and one with a
        # colon from reading as host:path.
        return [*self.argv[:-1], *(b"./" + name for name in names), self.argv[-1]], b""


def copy_invocation(source: Location, destination: Location, origin: str, ssh: SshSettings,
                    bwlimit_kib: int | None = None, ignore_times: bool = False) -> Invocation:
    """The command that copies files of ``source`` into ``<destination>/<origin>/``, each
    rsync sending at most ``bwlimit_kib`` KiB/s when set.

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
        inner = ["rsync", *rsync_options(" ".join(shlex.quote(arg) for arg in hop), bwlimit_kib=bwlimit_kib,
                                         ignore_times=ignore_times),
                 source.rsync_spec().split(":", 1)[1], target.rsync_spec()]
        return Invocation([*source.ssh_args(ssh), " ".join(shlex.quote(part) for part in inner)])
    if source.is_remote:
        return Invocation(["rsync", *rsync_options(source.rsync_shell(ssh), bwlimit_kib=bwlimit_kib,
                                                         ignore_times=ignore_times),
                           source.rsync_spec(), target.rsync_spec()])
    # A local sender gets the names as arguments: rsync reads a local --files-from one byte
    # per system call (58 calls per file in all, against 23 for rsync -a), which doubles the
    # time of a large copy. (A remote sender gets the list over rsync's own buffered protocol.)
    if not target.is_remote:
        target = Location(os.path.abspath(target.path))
    shell = destination.rsync_shell(ssh) if destination.is_remote else None
    return Invocation(["rsync", *rsync_options(shell, names_as_arguments=True, bwlimit_kib=bwlimit_kib,
                                                     ignore_times=ignore_times),
                       target.rsync_spec()],
                      cwd=source.path)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to send SIGTERM when reconciler dies (even by
    kill -9), so an orphaned rsync stops, removes its temporary file, and never races the
    next run. Elsewhere a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    # a process group of its own: a Ctrl-C on the terminal reaches reconciler alone, which lets
    # the running batch end cleanly and records what it delivered (a second Ctrl-C ends reconciler,
    # and the death signal above ends rsync)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)


def unescape(line: bytes) -> bytes:
    """rsync writes unprintable bytes of names as ``\\#ooo`` (octal); undo that."""
    return _ESCAPE.sub(lambda match: bytes([int(match.group(1), 8)]), line)


def run_rsync(argv: Sequence[str | bytes], stdin: bytes, on_names: Callable[[list[bytes]], None],
              cwd: str | None = None) -> tuple[int, list[str]]:
    """Run an rsync (or an ssh that runs one) with ``--out-format=%n``: ``on_names`` gets the
    transferred names (unescaped, directories skipped) as they are printed, a block of lines
    at a time. Returns (exit code, stderr lines). The child dies with reconciler (see
    ``_die_with_parent``).

    Raises ApplyError when it was killed by a signal, ToolMissingError when absent.
    """
    program = os.fsdecode(argv[0])
    executable = require(program, "rsync" if program == "rsync" else "openssh-client")
    run = Streamed(executable, list(argv[1:]), stdin, cwd, preexec_fn=_die_with_parent)
    pending = b""
    try:
        for chunk in run.chunks():
            *lines, pending = (pending + chunk).split(b"\n")
            names = [unescape(line) if b"\\#" in line else line for line in lines]
            on_names([name for name in names if name and not name.endswith(b"/")])
    except KilledBySignal as error:
        raise ApplyError(f"rsync was {error}") from None
    assert run.exit_code is not None
    return run.exit_code, run.stderr


def failure(code: int, errors: list[str]) -> ApplyError:
    """The error of an rsync that failed with ``code``: its last words and what the code means."""
    meaning = EXIT_MEANINGS.get(code, "see rsync(1), EXIT VALUES")
    return ApplyError(f"rsync failed with exit {code} ({meaning}): {last_words(code, errors)}")


def last_words(code: int, errors: list[str]) -> str:
    """What rsync said last on stderr: its last line naming a cause (rsync's closing
    "rsync error: … (code N) at main.c(…)" only names the code), or its exit code
    when it said nothing."""
    said = [line for line in errors if line.strip()]
    causes = [line for line in said if not line.startswith("rsync error:")]
    return causes[-1] if causes else said[-1] if said else f"exit {code}"


def argument_budget() -> int:
    """Bytes of file names one rsync may take as arguments: half of what exec(2) allows here
    less the environment, so rsync's options always fit, and at most 1 MiB."""
    try:
        allowed = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        allowed = 128 << 10
    environment = sum(len(key) + len(value) + 2 + 8 for key, value in os.environb.items())
    return max(32 << 10, min(1 << 20, allowed // 2 - environment))


ARGUMENT_OVERHEAD = 11  # per name passed as an argument: "./", its NUL and its pointer


def plan_batches(files: list[bytes], limit: int = 20_000, max_bytes: int = 1 << 20,
                 first_limit: int | None = None) -> list[list[bytes]]:
    """Split one copy's files (paths relative to the origin's root) into rsync batches of at
    most ``limit`` files whose paths, each plus ``ARGUMENT_OVERHEAD``, take at most
    ``max_bytes``, so a batch's names fit in an argument list.

    Few large batches, not one per directory: every rsync run costs tens of milliseconds
    before and after its first file (it sleeps 20 ms at a time waiting for its children),
    while a long list of full paths costs it about what a recursive rsync pays per file.
    """
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for name in files:
        cost = len(name) + ARGUMENT_OVERHEAD
        most = first_limit if first_limit is not None and not batches else limit
        if current and (len(current) >= most or size + cost > max_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(name)
        size += cost
    if current:
        batches.append(current)
    return batches


@dataclass
class CopyResult:
    delivered: int = 0  # files on the replica now
    transferred: int = 0  # of those, how many rsync actually sent (the rest were there already)
    complete: bool = True  # every file of the copy is on the replica
    warning: str | None = None  # why not (rsync exit 23/24 in some batch)
    error: ApplyError | None = None  # a batch failed outright: its files are not counted as delivered
    interrupted: bool = False  # the run was asked to stop: batches not started then were not run


def run_copies(invocation: Invocation, batches: list[list[bytes]], jobs: int = 1,
               progress: Callable[[int, int], None] | None = None,
               delivered: Callable[[int, list[bytes] | None], None] | None = None,
               interrupt: threading.Event | None = None) -> CopyResult:
    """Run ``invocation`` once per batch, ``jobs`` at a time, and report what arrived.

    A batch that exits 0 delivered all its files; exit 23/24 only the files rsync
    printed. Any other exit is ``error`` (rsync's last words and what the code
    means); no new batch starts after one, and the files of batches that
    finished are still reported, so the caller can record them. ``delivered``
    gets each finished batch's index and the files it delivered (None: the whole
    batch), in this thread while the other batches go on copying. Once ``interrupt`` is set
    (the run was asked to stop), the running batches end as rsync finishes them and no new one
    starts (``interrupted``).
    """
    result = CopyResult()
    total = sum(len(batch) for batch in batches)
    lock = threading.Lock()
    stop = threading.Event()

    def run_one(index: int) -> tuple[int, list[bytes] | None, int, list[str], ApplyError | None]:
        batch = batches[index]
        if stop.is_set():
            return index, [], 0, [], None
        if interrupt is not None and interrupt.is_set():  # asked to stop: running batches end, no new one
            result.interrupted = True
            return index, [], 0, [], None
        printed: list[bytes] = []

        def on_names(names: list[bytes]) -> None:
            printed.extend(names)
            with lock:
                result.transferred += len(names)
                if progress:
                    progress(result.transferred, total)

        try:
            argv, stdin = invocation.command(batch)
            code, errors = run_rsync(argv, stdin, on_names, invocation.cwd)
        except ApplyError as error:
            stop.set()
            return index, [], -1, [], error
        if code == 0:
            return index, None, code, errors, None
        if code in PARTIAL_CODES:
            return index, printed, code, errors, None
        stop.set()
        return index, [], code, errors, failure(code, errors)

    def take(outcome: tuple[int, list[bytes] | None, int, list[str], ApplyError | None]) -> None:
        index, files, code, errors, error = outcome
        if files == [] and not code and error is None and batches[index]:
            result.complete = False  # never started (a failure elsewhere, or the run was asked to stop)
        count = len(batches[index]) if files is None else len(files)
        if count:
            result.delivered += count
            if delivered:
                delivered(index, files)
        if error is not None:
            result.complete = False
            result.error = result.error or error
        elif code:
            result.complete = False
            result.warning = result.warning or (
                f"rsync exit {code} ({PARTIAL_CODES[code]}): {last_words(code, errors)}")

    if not batches:
        return result
    # The first batch runs alone: its --mkpath creates <replica>/<origin>/, which parallel
    # rsyncs would race to create (the loser fails with exit 11).
    first = run_one(0)
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="rsync") as pool:
        futures = [pool.submit(run_one, index) for index in range(1, len(batches))]
        take(first)
        for future in as_completed(futures):
            take(future.result())
    return result
