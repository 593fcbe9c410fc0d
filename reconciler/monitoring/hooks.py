"""The monitoring a run does at its start and end, driven by ``[monitoring]``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler.errors import ReconcilerError
from reconciler.monitoring.run import RunSummary

log = logging.getLogger("reconciler.monitoring")
PINGING = ("apply", "reconcile")  # commands that ping and notify; plan only writes metrics


def configured(section: Any) -> bool:
    """True when ``[monitoring]`` asks for anything."""
    return bool(section.textfile or section.healthcheck_url or section.healthcheck_url_env or section.on_failure)


def _check_url(section: Any) -> str | None:
    try:
        return section.check_url()  # type: ignore[no-any-return]
    except ValueError as error:
        log.warning("%s; no health-check ping is sent", error)
        return None


def kind_samples(kinds: list[Any], desired: Any, store: Any) -> list[Any]:
    """Every kind's own figures (``Kind.metrics``); a kind whose figures cannot be read is
    skipped with a warning (the address-level figures still say whether it was observed)."""
    found: list[Any] = []
    for kind in kinds:
        try:
            found.extend(kind.metrics(desired, store))
        except (ReconcilerError, OSError) as error:
            log.warning("metrics of %s could not be read: %s", kind.name, error)
    return found


def monitored(section: Any, command: str, declared: list[str],
              samples: Callable[[], list[Any]], body: Callable[[RunSummary], int]) -> int:
    """Run ``body`` (which fills in the summary's plan and report and returns the exit code)
    between a start ping and the end's metrics, ping and failure command. Whatever ``body``
    raises is re-raised after the end was reported (exit 1; 130 on Ctrl-C)."""
    summary = RunSummary(command=command, started=time.time(), declared=declared)
    url = _check_url(section) if command in PINGING else None
    if url:
        from reconciler.monitoring.notify import ping

        ping(url, "start", f"reconciler {command} started on {summary.host}",
             section.healthcheck_timeout.total_seconds())
    try:
        summary.exit_code = body(summary)
        return summary.exit_code
    except KeyboardInterrupt:
        summary.exit_code, summary.error = 130, "interrupted"
        raise
    except ReconcilerError as error:
        summary.exit_code, summary.error = 1, str(error)
        raise
    except BaseException as error:
        summary.exit_code = 1
        summary.error = f"internal error ({type(error).__name__}: {error})"
        raise
    finally:
        summary.finished = time.time()
        _finish(section, summary, url, samples)


def _finish(section: Any, summary: RunSummary, url: str | None, samples: Callable[[], list[Any]]) -> None:
    if section.textfile:
        from reconciler.monitoring.metrics import write_textfile

        try:
            write_textfile(Path(section.textfile), summary, samples() if summary.complete else None)
        except OSError as error:
            log.warning("cannot write the metrics file %s: %s", section.textfile, error.strerror or error)
    if summary.command not in PINGING:
        return
    if url:
        from reconciler.monitoring.notify import ping

        ping(url, "success" if summary.success else "fail", summary.text(), section.healthcheck_timeout.total_seconds())
    if summary.exit_code == 1 and section.on_failure:
        from reconciler.monitoring.notify import run_on_failure

        run_on_failure(list(section.on_failure), summary, section.on_failure_timeout.total_seconds())
