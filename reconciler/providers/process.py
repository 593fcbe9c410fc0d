"""Running ssh and rsync with their output streamed back: through a pipe of our own, read
in the calling thread, never through ``sh``'s iterator.

``sh``'s output threads format a debug message (with the data) for every block they
read, and ``_iter`` hands output over through a queue. Worse, a process whose output ends
a moment before it exits leaves sh's reader thread waiting up to a second for the exit,
which nothing wakes while the caller is still iterating: about one listing in three took
a second longer. Here the caller reads the pipe to its end, then waits for the process
itself, which also releases sh's stderr reader at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import sh

from reconciler.errors import ToolMissingError

CHUNK = 1 << 16
# After a read shorter than this, which emptied the pipe, wait PAUSE seconds before the
# next: rsync writes each line of output on its own, and reading them as they come cost a
# read, a thread switch and a callback per file (about 0.5 s of CPU per 200,000 files,
# taken from the rsyncs on a small machine). The pipe is enlarged to PIPE_BYTES where the
# system allows, so that a writer faster than PIPE_BYTES per PAUSE is never held up.
SHORT_READ = CHUNK // 4
PAUSE = 0.01
PIPE_BYTES = 1 << 20
# Every exit status, signals (negative) included: sh would otherwise raise a failure from
# its own background thread, where nothing can catch it (a traceback on stderr).
EVERY_EXIT = list(range(-64, 256))


class KilledBySignal(Exception):
    """The process was killed by signal ``number``."""

    def __init__(self, number: int):
        super().__init__(f"killed by signal {number}")
        self.number = number


class Streamed:
    """One run of ``program`` with ``args`` (exact bytes), ``stdin`` fed to it (bytes, or
    nothing), in ``cwd``. Iterate ``chunks()`` for its standard output; then ``exit_code``
    and ``stderr`` (its lines) are set. Every exit code is taken, to be judged by the caller.

    ``chunks()`` raises KilledBySignal when the process was killed by a signal. When the
    caller stops iterating early, the process is terminated and reaped.
    """

    def __init__(self, program: str, args: list[str | bytes], stdin: bytes | None = None, cwd: str | None = None,
                 preexec_fn: Callable[[], None] | None = None):
        self.program = program
        self.args = args
        self.stdin = stdin
        self.cwd = cwd
        self.preexec_fn = preexec_fn
        self.exit_code: int | None = None
        self.stderr: list[str] = []

    def _on_stderr(self, line: str) -> None:
        # Arguments go out as latin-1 (bytes exactly); messages are read back as UTF-8.
        self.stderr.append(line.encode("latin-1").decode("utf-8", "replace").rstrip())

    def chunks(self) -> Iterator[bytes]:
        read_end, write_end = os.pipe()
        if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux
            with contextlib.suppress(OSError):  # above the system's limit (fs.pipe-max-size)
                fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        with open(read_end, "rb", buffering=0) as output, open(os.devnull, "rb") as nothing:
            with open(write_end, "wb", buffering=0) as child_output:
                extra: dict[str, Any] = {"_preexec_fn": self.preexec_fn} if self.preexec_fn else {}
                process = sh.Command(self.program)(
                    *exact_args(self.args), _in=self.stdin if self.stdin else nothing, _out=child_output,
                    _err=self._on_stderr, _encoding="latin-1", _ok_code=EVERY_EXIT, _bg=True,
                    _cwd=self.cwd, **extra)
            finished = False
            try:
                while chunk := output.read(CHUNK):
                    yield chunk
                    if len(chunk) < SHORT_READ:
                        time.sleep(PAUSE)
                finished = True
            finally:
                if not finished and process.is_alive():
                    process.terminate()
                process.wait()
        self.exit_code = process.exit_code
        if self.exit_code < 0:
            raise KilledBySignal(-self.exit_code)

    def records(self) -> Iterator[bytes]:
        """The output as NUL-terminated records (``find -print0``, ``sha256sum -z``), each without
        its NUL, as they arrive. Raises KilledBySignal as ``chunks`` does."""
        buffer = b""
        for chunk in self.chunks():
            buffer += chunk
            *complete, buffer = buffer.split(b"\0")
            yield from complete


def require(binary: str, package: str) -> str:
    """The path of ``binary``. Raises ToolMissingError naming the install command."""
    found = shutil.which(binary)
    if not found:
        raise ToolMissingError(binary, f"apt-get install {package}, or your system's package manager")
    return found


def exact_args(args: list[str | bytes]) -> list[str]:
    """Arguments for an ``sh`` command run with ``_encoding="latin-1"``: sh encodes each
    with that, and latin-1 maps every byte to itself, so the program gets exactly the file
    system's bytes (of str arguments, as Python encodes paths; of bytes, as they are)."""
    return [os.fsencode(arg).decode("latin-1") for arg in args]
