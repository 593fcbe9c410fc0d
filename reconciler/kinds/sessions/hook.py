"""Running the facility's state-change hook: an argument list (never a shell string),
with a timeout that stops the hook and everything it started, its output appended
to ``hooks.log`` under the state directory, and the change in the environment too."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from reconciler.errors import ApplyError

LOG_NAME = "hooks.log"
LOG_CAP = 1 << 20  # bytes of one call's output kept in hooks.log
TAIL = 4096  # bytes of the output kept in memory, for the error message


@dataclass(frozen=True)
class HookCall:
    project_uid: str
    session_uid: str
    datatype: str
    status: str

    @property
    def arguments(self) -> list[str]:
        return [self.project_uid, self.session_uid, self.datatype, self.status]

    @property
    def environment(self) -> dict[str, str]:
        return {"RECONCILER_PROJECT_UID": self.project_uid, "RECONCILER_SESSION_UID": self.session_uid,
                "RECONCILER_DATATYPE": self.datatype, "RECONCILER_STATUS": self.status}


def hook_problem(program: str | None) -> str | None:
    """Why ``program`` cannot run (missing, a directory, not executable), or None."""
    if program is None:
        return None
    path = Path(program)
    if not path.exists():
        return f"the datatype_state hook {program} does not exist; fix [hooks] datatype_state"
    if not path.is_file():
        return f"the datatype_state hook {program} is not a file"
    if not os.access(path, os.X_OK):
        return f"the datatype_state hook {program} is not executable (chmod +x {program})"
    return None


def run_hook(program: str, call: HookCall, timeout: float, log_dir: Path) -> str:
    """Run the hook; returns the end of its output. Its output is streamed into ``hooks.log`` as
    it comes (at most ``LOG_CAP`` bytes per call; memory holds only the last ``TAIL`` bytes).
    Its environment is reconciler's without any variable that holds a password
    (``reconciler.secrets.safe_environment``), plus the change.

    Raises ApplyError with the end of the output when it exits non-zero or runs longer than
    ``timeout`` seconds (it is then stopped, with its children).
    """
    from reconciler.secrets import safe_environment

    problem = hook_problem(program)
    if problem:
        raise ApplyError(problem)
    argv = [program, *call.arguments]
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env={**safe_environment(), **call.environment}, start_new_session=True)
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    timed_out = False
    tail = bytearray()
    logged = 0
    with open(log_dir / LOG_NAME, "ab") as log:
        log.write(f"--- {stamp} {' '.join(argv)}: started\n".encode())
        log.flush()
        descriptor = process.stdout.fileno()
        ended_at: float | None = None
        while True:
            now = time.monotonic()
            if now >= deadline:
                timed_out = process.poll() is None
                break
            if ended_at is None and process.poll() is not None:
                ended_at = now  # the hook is done; what it left running may still hold the pipe
            if ended_at is not None and now - ended_at > 1.0:
                break
            ready, _, _ = select.select([descriptor], [], [], min(0.2, deadline - now))
            if not ready:
                continue
            chunk = os.read(descriptor, 65536)
            if not chunk:
                break
            tail.extend(chunk)
            del tail[:-TAIL]
            if logged < LOG_CAP:
                kept = chunk[:LOG_CAP - logged]
                log.write(kept)
                logged += len(kept)
                if logged >= LOG_CAP:
                    log.write(f"\n[output cut after {LOG_CAP:,} bytes]\n".encode())
                log.flush()
        if timed_out:
            os.killpg(process.pid, signal.SIGKILL)
        process.stdout.close()
        process.wait()
        outcome = "timed out" if timed_out else f"exit {process.returncode}"
        if logged and not tail.endswith(b"\n"):
            log.write(b"\n")
        log.write(f"--- {stamp} {' '.join(argv)}: {outcome}\n".encode())
    text = tail.decode("utf-8", errors="replace")
    last = text.strip().splitlines()[-3:]
    said = (": " + " | ".join(last)) if last else " (no output)"
    if timed_out:
        raise ApplyError(f"the hook {' '.join(argv)} did not finish within {timeout:g}s and was stopped{said}")
    if process.returncode != 0:
        raise ApplyError(f"the hook {' '.join(argv)} failed with exit {process.returncode}{said}; "
                         "the state was not changed")
    return text
