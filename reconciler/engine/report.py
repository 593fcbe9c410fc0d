"""What a resource kind gives the report and its history, without the report knowing the kind.

- ``Kind.report_section(desired, ctx)`` returns a ``ReportSection``: the kind's data and a
  jinja2 template fragment (HTML) that draws it; ``reconciler/render/report.py`` renders every
  section in ``order`` inside one page. Fragments may call the drawing helpers the renderer
  provides (``line_chart``, ``timeline_chart``, ``when``, the ``plural`` filter...).
- ``Kind.measure(desired, state)`` returns ``Measure`` values (bytes, files, free space...) that
  a run records in the state's small ``measurements`` table (engine/history.py); the report
  reads them back through ``ReportContext.history`` to draw how they changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.state.store import StateStore

History = dict[str, list[tuple[datetime, float]]]  # address -> (measured at, value), oldest first


@dataclass(frozen=True)
class Measure:
    """One figure about one address (``replica:/mnt/backup``, ``origin:exao1``...), e.g. metric
    ``bytes`` or ``free_bytes``, and when it was measured: a figure read from the state is as old as
    the observation that wrote it, not as the run that reads it (timezone-aware, UTC)."""

    address: str
    metric: str
    value: float
    measured_at: datetime


@dataclass
class ReportContext:
    """What a kind's report section may use: the config, its directory, the state (read only),
    the errors of the observation made for this report (address -> messages; ``kind:*`` for a
    whole kind) and the recorded measurements."""

    desired: Any
    base_dir: Path
    state: StateStore
    generated_at: datetime
    errors: dict[str, list[str]] = field(default_factory=dict)
    read_history: Callable[[str, str], History] = lambda prefix, metric: {}

    def error_of(self, address: str) -> str | None:
        """The observation errors of ``address`` (or of its whole kind), joined; None when it was observed."""
        kind = address.split(":", 1)[0]
        found = self.errors.get(address, []) + self.errors.get(f"{kind}:*", [])
        return "; ".join(found) if found else None

    def history(self, prefix: str, metric: str) -> History:
        """Recorded values of ``metric`` for every address starting ``prefix:`` (oldest first)."""
        return self.read_history(prefix, metric)


@dataclass
class ReportSection:
    """One kind's part of the report.

    ``template`` is jinja2 source producing an HTML fragment; it sees ``section`` (= ``data``)
    and ``ctx`` (the ReportContext). ``key`` becomes the fragment's element id; ``order`` places
    it among the other sections (lower first); ``count`` is a short text for the page's header
    ("3 replicas"); ``problems`` are lines shown at the top of the report and printed as warnings.
    """

    key: str
    title: str
    template: str
    data: Any = None
    order: int = 50
    count: str = ""
    problems: list[str] = field(default_factory=list)


def fragment(package: str, name: str = "report.html.j2") -> str:
    """The text of the template fragment ``name`` shipped in ``package`` (a kind's own package)."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")
