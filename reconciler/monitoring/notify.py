"""Health-check pings (the healthchecks.io protocol) and the ``on_failure`` command.

Neither ever fails the run: a ping that cannot be sent, or a command that fails or hangs, is a
warning in the log. The ping URL is never logged (it is the check's secret); the command gets
reconciler's environment without any variable that holds a password, plus the run's summary.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from urllib.parse import urlsplit

from reconciler.monitoring.run import RunSummary

log = logging.getLogger("reconciler.monitoring")
MAX_BODY = 100_000  # healthchecks.io keeps at most 100 kB of a ping's body


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}"


def ping(url: str, signal: str, body: str, timeout: float) -> bool:
    """POST ``body`` to ``url`` + ``/start``, ``""`` (success) or ``/fail``. True when sent."""
    from urllib.error import URLError
    from urllib.request import Request, urlopen

    suffix = {"start": "/start", "success": "", "fail": "/fail"}[signal]
    target = url.rstrip("/") + suffix
    request = Request(target, data=body.encode("utf-8")[:MAX_BODY], method="POST",
                      headers={"Content-Type": "text/plain; charset=utf-8", "User-Agent": "reconciler"})
    try:
        with urlopen(request, timeout=timeout) as response:  # noqa: S310 - the operator's own URL
            if 200 <= response.status < 300:
                return True
            log.warning("health-check ping (%s) to %s answered HTTP %s", signal, _where(url), response.status)
    except (URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        log.warning("health-check ping (%s) to %s failed: %s", signal, _where(url), reason)
    return False


def run_on_failure(argv: list[str], summary: RunSummary, timeout: float) -> bool:
    """Run the failure command with the summary in its environment (RECONCILER_SUMMARY,
    RECONCILER_COMMAND, RECONCILER_EXIT_CODE, RECONCILER_HOST) and on its standard input.
    True when it exited 0."""
    from reconciler.secrets import safe_environment

    text = summary.text()
    environment = {**safe_environment(), "RECONCILER_SUMMARY": text, "RECONCILER_COMMAND": summary.command,
                   "RECONCILER_EXIT_CODE": str(summary.exit_code), "RECONCILER_HOST": summary.host}
    with tempfile.TemporaryFile() as output:
        try:
            completed = subprocess.run(argv, input=text.encode("utf-8"), stdout=output, stderr=subprocess.STDOUT,
                                       env=environment, timeout=timeout, check=False, start_new_session=True)
        except subprocess.TimeoutExpired:
            log.warning("on_failure command %s did not finish within %gs and was stopped", argv[0], timeout)
            return False
        except OSError as error:
            log.warning("on_failure command %s could not run: %s", argv[0], error.strerror or error)
            return False
        if completed.returncode != 0:
            output.seek(max(0, os.fstat(output.fileno()).st_size - 2000))
            said = output.read().decode("utf-8", "replace").strip().splitlines()[-3:]
            log.warning("on_failure command %s failed with exit %s%s", argv[0], completed.returncode,
                        (": " + " | ".join(said)) if said else "")
            return False
    return True
