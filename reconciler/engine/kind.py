"""The resource-kind protocol.

A resource kind (replicas, database backups, projects, session datatypes) is a
subclass of ``Kind`` in a module or package of its own under
``reconciler/kinds/`` (found by name, so adding a kind touches no other file),
or in a third-party package registered under the ``reconciler.kinds`` entry
point group. It declares:

- ``sections``: the top-level TOML keys it owns and their pydantic types; the
  engine builds the config model from the union of all kinds' sections.
- ``address_prefix``: its addresses are ``<prefix>:<name>`` (e.g. ``replica:/mnt/backup``).
- ``observe(desired, ctx) -> Observation``: every read of the world.
- ``diff(desired, observation) -> Diff``: pure; no I/O, no clock, no globals.
- executors: methods decorated with ``@executor("copy")``, one per action kind,
  each changing the world for one action. Executors must be idempotent and safe
  to interrupt: the next run re-observes and converges.
- optionally a ``Memo`` in its observation: what "nothing to do" rests on, so that the
  next run can tell without observing (engine/memo.py);
- optionally ``check`` (cross-reference checks on the config), ``commands``
  (extra CLI commands), ``tables`` (the SQLModel tables the state store creates for
  it), ``schema_version`` and ``migrations``;
- optionally ``report_section`` (its part of ``report --html``: data and a template fragment)
  and ``measure`` (figures each run records for the report's history); engine/report.py.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from reconciler.engine.actions import Action, AddressMessage
from reconciler.engine.memo import Memo

if TYPE_CHECKING:
    import click
    from pydantic import BaseModel
    from sqlalchemy.engine import Connection

    from reconciler.engine.report import Measure, ReportContext, ReportSection
    from reconciler.state.store import StateStore

ConfigPath = tuple[str | int, ...]


@dataclass
class Observation:
    """What a kind read of the world: its own ``facts`` plus per-address errors, and when it
    finds nothing to do, optionally a ``memo`` of what that rests on (engine/memo.py; a kind
    that offers none, the default, has every run observe in full)."""

    facts: Any = None
    errors: list[AddressMessage] = field(default_factory=list)
    memo: Memo | None = None


@dataclass
class Diff:
    """What a kind's diff proposes: actions, notes ("waiting: ..."), warnings (nothing failed,
    but an address needs the operator: ``reconcile`` exits 2) and errors it found."""

    actions: list[Action] = field(default_factory=list)
    notes: list[AddressMessage] = field(default_factory=list)
    errors: list[AddressMessage] = field(default_factory=list)
    warnings: list[AddressMessage] = field(default_factory=list)

    def extend(self, other: Diff) -> Diff:
        """Add ``other``'s actions, notes and errors to this one (kinds diff per thing, then combine)."""
        self.actions.extend(other.actions)
        self.notes.extend(other.notes)
        self.errors.extend(other.errors)
        self.warnings.extend(other.warnings)
        return self


class Progress(Protocol):
    """``progress(label, done, total)``: ``total < 0`` for work of unknown size (a scan), ended
    by a call with ``total == done``; ``bytes_done``/``bytes_total`` when bytes are known."""

    def __call__(self, label: str, done: int, total: int, bytes_done: int | None = None,
                 bytes_total: int | None = None) -> None: ...


def _no_progress(label: str, done: int, total: int, bytes_done: int | None = None,
                 bytes_total: int | None = None) -> None:
    return None


@dataclass
class RunContext:
    """Everything observers and executors may use besides the config.

    ``desired`` is the validated config model (executors read settings from it).
    ``options`` carries kind-specific flags from the CLI (e.g. ``full_scan``).
    ``stop`` is set when the operator asked the run to stop (SIGTERM/SIGINT);
    long executors should check it between units of work. ``progress(label,
    done, total)`` reports long work (``Progress``); the CLI shows a bar or a
    spinner on a terminal and periodic log lines otherwise, and throttles calls itself.
    """

    base_dir: Path
    state: StateStore
    desired: Any = None
    targets: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    progress: Progress = field(default_factory=lambda: _no_progress)
    # For ``Kind.measure``: addresses whose observation failed in this run (``kind:*`` for a whole
    # kind), so that a kind does not wait again on what the run already found unreachable.
    unobserved: frozenset[str] = frozenset()
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("reconciler"))


def executor(action_kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a ``Kind`` method as the executor of ``action_kind`` actions.

    The method is called as ``method(action, ctx)``; it returns an optional
    one-line result ("copied 3 files, 1.2 MiB") and raises a ReconcilerError
    (usually ApplyError) naming what failed.
    """

    def mark(function: Callable[..., Any]) -> Callable[..., Any]:
        function.__reconciler_executes__ = action_kind  # type: ignore[attr-defined]
        return function

    return mark


class Kind(ABC):
    """Base class of resource kinds. See the module docstring for the protocol."""

    name: ClassVar[str]
    address_prefix: ClassVar[str]
    # Further prefixes of addresses this kind's actions may carry (e.g. "origin" for trims).
    other_address_prefixes: ClassVar[tuple[str, ...]] = ()
    sections: ClassVar[dict[str, Any]] = {}
    tables: ClassVar[list[type]] = []
    schema_version: ClassVar[int] = 1
    migrations: ClassVar[dict[int, Callable[[Connection], None]]] = {}
    executors: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found = dict(getattr(cls, "executors", {}))
        for attribute, value in vars(cls).items():
            action_kind = getattr(value, "__reconciler_executes__", None)
            if action_kind:
                found[action_kind] = attribute
        cls.executors = found

    def address(self, name: str) -> str:
        """The address of the managed thing called ``name``."""
        return f"{self.address_prefix}:{name}"

    def addresses(self, desired: BaseModel) -> list[str]:
        """Addresses the config declares for this kind (used by the empty-desired-set guard)."""
        return []

    def check(self, desired: BaseModel, base_dir: Path) -> list[tuple[ConfigPath, str]]:
        """Cross-reference checks the pydantic models cannot do alone (``base_dir``: the
        config's directory, against which relative paths resolve).

        Returns (config path, message) pairs; the loader turns them into
        ``FILE:LINE:COL: message`` lines.
        """
        return []

    @abstractmethod
    def observe(self, desired: BaseModel, ctx: RunContext) -> Observation:
        """Read the world for everything this kind manages. Per-address failures go
        into ``Observation.errors``; other addresses must still be observed."""

    @abstractmethod
    def diff(self, desired: BaseModel, observation: Observation) -> Diff:
        """Pure: the actions that make the world match ``desired``."""

    def recheck(self, action: Action, desired: BaseModel, observation: Observation) -> str | None:
        """The precondition ``action`` would have now, or None when it is no longer planned.

        The default re-diffs and looks the action up by id; kinds whose plans
        change often (new files arriving) may narrow this to the action's own facts.
        """
        for fresh in self.diff(desired, observation).actions:
            if fresh.id == action.id:
                return fresh.precondition
        return None

    def locks(self, action: Action) -> dict[str, bool]:
        """The addresses ``action`` needs locked while a run carries it out, each True for an
        exclusive lock (it changes the thing) or False for a shared one (it only reads it).
        PostgreSQL states lock per address (state/lock.py); the default is the action's own
        address, exclusively."""
        return {action.address: True}

    def apply(self, action: Action, ctx: RunContext) -> str | None:
        """Run the executor registered for ``action.kind``."""
        method_name = self.executors.get(action.kind)
        if method_name is None:
            from reconciler.errors import ApplyError

            raise ApplyError(f"{action.address}: the {self.name} kind has no executor for '{action.kind}' actions")
        return getattr(self, method_name)(action, ctx)

    def commands(self) -> list[click.Command]:
        """Extra CLI commands of this kind (``replicas list``...)."""
        return []

    def metrics(self, desired: BaseModel, state: StateStore) -> list[Any]:
        """This kind's own figures for the metrics file, as ``reconciler.monitoring.metrics.Sample``
        values (e.g. files missing per replica, the newest backup's age), read from the state
        after a run of the whole config. Raises ReconcilerError or OSError when they cannot be read."""
        return []

    def report_section(self, desired: BaseModel, ctx: ReportContext) -> ReportSection | None:
        """This kind's section of the report (engine/report.py), or None (the default) for none.
        Reads only: the report has just observed (``ctx.errors``). Raises ReconcilerError or
        OSError when the section cannot be made; the report then names the kind as a problem."""
        return None

    def measure(self, desired: BaseModel, ctx: RunContext) -> list[Measure]:
        """Figures worth keeping as history (bytes and files held, free space...), read cheaply
        after a run of the whole config, each with the time it was measured (engine/report.py).
        The default records none. Raises ReconcilerError or OSError when they cannot be read."""
        return []
