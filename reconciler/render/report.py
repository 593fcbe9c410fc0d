"""Rendering the data management report as one self-contained HTML page (no network assets)."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from reconciler import __version__
from reconciler.kinds.sessions.datatypes import DATATYPES
from reconciler.report.collect import Report
from reconciler.secrets import redact
from reconciler.units import human_bytes

_environment = Environment(
    loader=PackageLoader("reconciler", "render/templates"),
    undefined=StrictUndefined,
    autoescape=select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.filters["human_bytes"] = lambda value: human_bytes(int(value or 0))
_environment.filters["count"] = lambda value: f"{int(value):,}"


def render_report(report: Report) -> str:
    return redact(_environment.get_template("report.html.j2").render(report=report, datatypes=list(DATATYPES),
                                                                     version=__version__))
