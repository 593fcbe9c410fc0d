"""What every command needs, loaded lazily: kinds, config, state store, run context."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.cli.logformat import DATE, PLAIN, TIMESTAMPED
from reconciler.config.discovery import discover_config_path
from reconciler.config.loader import LoadedConfig, load_config
from reconciler.engine.kind import Kind, RunContext
from reconciler.engine.registry import load_kinds
from reconciler.state.store import StateStore, resolve_state_url

if TYPE_CHECKING:
    from reconciler.cli.progress import ProgressReporter


@dataclass
class App:
    """The global options of one invocation and what they lead to."""

    config_option: str | None = None
    state_option: str | None = None
    verbosity: int = 0
    log_format: str = "text"
    _store: StateStore | None = field(default=None, init=False)
    _progress: ProgressReporter | None = field(default=None, init=False)
    _empty_dir: Any = field(default=None, init=False)

    @cached_property
    def kinds(self) -> list[Kind]:
        return load_kinds()

    @cached_property
    def config_path(self) -> Path:
        return discover_config_path(self.config_option)

    @cached_property
    def config(self) -> LoadedConfig:
        """The validated config. Raises ConfigError."""
        return load_config(self.config_path, self.kinds)

    @property
    def state_url(self) -> str:
        section = self.config.model.state  # type: ignore[attr-defined]
        return resolve_state_url(self.state_option, self.config.base_dir, section.url, section.url_env)

    @property
    def _explicit_state(self) -> bool:
        section = self.config.model.state  # type: ignore[attr-defined]
        return bool(self.state_option or section.url or section.url_env)

    def _sqlite_file(self) -> Path | None:
        from reconciler.state.location import plain_sqlite_file

        return plain_sqlite_file(self.state_url, self.config.base_dir)

    @property
    def store(self) -> StateStore:
        """The state database, opened (and created or migrated) on first use.

        Raises StateError, also when a state database named explicitly (``--state``,
        ``[state] url``) lies in a directory that does not exist: that is a typo far more often
        than a wish for a new directory (the default ``state/`` next to the config is created).
        """
        if self._store is None:
            self._refuse_missing_directory()
            self._store = StateStore(self.state_url, self.kinds)
        return self._store

    def _refuse_missing_directory(self) -> None:
        database = self._sqlite_file()
        if database is not None and self._explicit_state and not database.parent.is_dir():
            from reconciler.errors import StateError

            raise StateError(f"the state database {database} would be in {database.parent}, which does not "
                             "exist; create that directory or fix --state / [state] url")

    @property
    def read_store(self) -> StateStore:
        """For commands that only read: the state database when it exists; else an empty one in a
        temporary directory (removed on exit), so that asking never creates a state file.
        Raises StateError."""
        if self._store is None:
            self._refuse_missing_directory()
            database = self._sqlite_file()
            if database is not None and not database.exists():
                import tempfile

                self._empty_dir = tempfile.TemporaryDirectory(prefix="reconciler-empty-state-")
                from sqlalchemy.engine import URL

                empty = URL.create("sqlite", database=str(Path(self._empty_dir.name) / "empty.db"))
                self._store = StateStore(empty.render_as_string(hide_password=False), self.kinds)
                return self._store
        return self.store

    @property
    def progress(self) -> ProgressReporter:
        """One progress display per invocation (every --watch round reuses it), stopped on exit."""
        if self._progress is None:
            from reconciler.cli.progress import ProgressReporter  # rich: only for commands that do work

            self._progress = ProgressReporter()
        return self._progress

    def run_context(self, targets: tuple[str, ...] = (), **options: Any) -> RunContext:
        return RunContext(
            progress=self.progress,
            base_dir=self.config.base_dir,
            state=self.store,
            desired=self.config.model,
            targets=tuple(targets),
            options=options,
            log=logging.getLogger("reconciler"),
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.close()  # a bar left by an action that failed midway
        if self._store is not None:
            self._store.dispose()
        if self._empty_dir is not None:
            self._empty_dir.cleanup()


class RedactingFormatter(logging.Formatter):
    """Log lines (and tracebacks) with every password removed (``reconciler.secrets``)."""

    def format(self, record: logging.LogRecord) -> str:
        from reconciler.secrets import redact

        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line (for journald, Loki…): time, level, logger, message, and the
    address and action when the line is about one; passwords removed."""

    def format(self, record: logging.LogRecord) -> str:
        import json
        from datetime import datetime

        from reconciler.secrets import redact

        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        for key in ("address", "action", "status"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False))


class CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record to ``sys.stderr`` as it is *now*: while a progress bar or spinner is
    shown, rich has put a proxy there that prints above the display, so a log line (an error)
    is never drawn over (reconciler/cli/progress.py)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.stderr


def setup_logging(verbosity: int, timestamps: bool, log_format: str = "text") -> None:
    """Logs and progress to stderr: warnings by default, info for apply/reconcile, debug with -v;
    ``log_format`` "json": one JSON object per line."""
    level = logging.DEBUG if verbosity > 0 else logging.INFO if timestamps else logging.WARNING
    handler = CurrentStderrHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter(TIMESTAMPED if timestamps else PLAIN, datefmt=DATE))
    root = logging.getLogger("reconciler")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
