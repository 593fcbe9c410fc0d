"""Rendering the data management report as one self-contained HTML page (no network assets):
the status, then each kind's section (its own template fragment, engine/report.py) with the
drawing helpers of reconciler/render/svg.py."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from reconciler import __version__
from reconciler.render import svg
from reconciler.report.collect import Report
from reconciler.secrets import redact
from reconciler.units import human_bytes

_environment = Environment(
    loader=PackageLoader("reconciler", "render/templates"),
    undefined=StrictUndefined,
    autoescape=select_autoescape(["html", "j2"], default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.filters["human_bytes"] = lambda value: human_bytes(int(value or 0))
_environment.filters["count"] = lambda value: f"{int(value):,}"
_environment.filters["plural"] = svg.plural


def _helpers(now: datetime) -> dict[str, Any]:
    """What every template and fragment may call, with the report's own time as "now"."""
    return {"when": functools.partial(svg.when, now=now),
            "line_chart": functools.partial(svg.line_chart, now=now),
            "timeline_chart": functools.partial(svg.timeline_chart, now=now),
            "exact": svg.exact}


def render_report(report: Report) -> str:
    """The whole page: each section's fragment rendered with ``section`` (its data) and ``ctx``."""
    helpers = _helpers(report.generated_at)
    rendered = [(section, Markup(_environment.from_string(section.template).render(
        section=section.data, ctx=report.context, **helpers))) for section in report.sections]
    return redact(_environment.get_template("report.html.j2").render(report=report, sections=rendered,
                                                                     version=__version__, **helpers))
