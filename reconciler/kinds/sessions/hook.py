"""Running the facility's state-change hook: an argument list (never a shell string),
with a timeout that stops the hook and everything it started, its output appended
to ``hooks.log`` under the state directory, and the change in the environment too."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from reconciler.errors import ApplyError

LOG_NAME = "hooks.log"


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
    """Run the hook; returns its output. Raises ApplyError with the output when it exits
    non-zero or runs longer than ``timeout`` seconds (it is then stopped, with its children)."""
    problem = hook_problem(program)
    if problem:
        raise ApplyError(problem)
    argv = [program, *call.arguments]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env={**os.environ, **call.environment}, start_new_session=True)
    timed_out = False
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    text = output.decode("utf-8", errors="replace")
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    outcome = "timed out" if timed_out else f"exit {process.returncode}"
    with open(log_dir / LOG_NAME, "a", encoding="utf-8") as log:
        log.write(f"--- {stamp} {' '.join(argv)}: {outcome}\n{text}")
        if text and not text.endswith("\n"):
            log.write("\n")
    last = text.strip().splitlines()[-3:]
    said = (": " + " | ".join(last)) if last else " (no output)"
    if timed_out:
        raise ApplyError(f"the hook {' '.join(argv)} did not finish within {timeout:g}s and was stopped{said}")
    if process.returncode != 0:
        raise ApplyError(f"the hook {' '.join(argv)} failed with exit {process.returncode}{said}; "
                         "the state was not changed")
    return text
