"""Plan rendering: jinja2 templates for text and markdown; JSON is the plan file itself."""

from __future__ import annotations

import json
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from reconciler.engine.actions import Action, Plan
from reconciler.secrets import redact
from reconciler.units import human_bytes

FORMATS = ("text", "markdown", "json")
SHOWN_ITEMS = 3


def _count(number: int) -> str:
    return f"{number:,}"


def detail_text(key: str, value: Any) -> str:
    """A short rendering of one ``details`` entry: long lists become a count and the first few items."""
    if isinstance(value, list):
        shown = ", ".join(str(item) for item in value[:SHOWN_ITEMS])
        more = f", … {len(value) - SHOWN_ITEMS:,} more" if len(value) > SHOWN_ITEMS else ""
        return f"{len(value):,} ({shown}{more})" if value else "none"
    if key == "bytes" and isinstance(value, int):
        return f"{human_bytes(value)} ({value:,} bytes)"
    if isinstance(value, dict):
        text = json.dumps(value, sort_keys=True, default=str)
        return text if len(text) <= 120 else text[:117] + "..."
    return str(value)


def kind_totals(actions: list[Action]) -> list[dict[str, Any]]:
    """Per action kind, in order of first appearance: count, files, bytes, destructive."""
    totals: dict[str, dict[str, Any]] = {}
    for action in actions:
        entry = totals.setdefault(
            action.kind, {"kind": action.kind, "count": 0, "files": None, "bytes": None, "destructive": False}
        )
        entry["count"] += 1
        if action.file_count is not None:
            entry["files"] = (entry["files"] or 0) + action.file_count
        if action.byte_count is not None:
            entry["bytes"] = (entry["bytes"] or 0) + action.byte_count
        entry["destructive"] = entry["destructive"] or action.destructive
    return list(totals.values())


def summary_line(plan: Plan) -> str:
    """``Plan: 2 copy (1,204 files, 5.6 GiB), 1 backup, 1 prune (destructive).``"""
    if not plan.actions:
        if plan.errors:
            return "No changes planned, but some addresses could not be observed (see errors above)."
        if plan.warnings:
            return "No changes to make now, but some addresses need attention (see warnings above)."
        if plan.notes:
            return "No changes to make now; some work is waiting (see above)."
        return "No changes. Everything matches the configuration."
    parts = []
    for entry in kind_totals(plan.actions):
        extra = []
        if entry["files"] is not None:
            extra.append(f"{_count(entry['files'])} files")
        if entry["bytes"] is not None:
            extra.append(human_bytes(entry["bytes"]))
        if entry["destructive"]:
            extra.append("destructive")
        parts.append(f"{entry['count']} {entry['kind']}" + (f" ({', '.join(extra)})" if extra else ""))
    return "Plan: " + ", ".join(parts) + "."


_environment = Environment(
    loader=PackageLoader("reconciler", "render/templates"),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_environment.filters["detail"] = lambda item: detail_text(*item)
_environment.filters["human_bytes"] = human_bytes
_environment.filters["count"] = _count


def render_plan(plan: Plan, output_format: str = "text") -> str:
    """The plan as ``text`` (Terraform-like), ``markdown`` (for a pull-request comment) or ``json``."""
    if output_format == "json":
        return plan.to_json()
    template = {"text": "plan.txt.j2", "markdown": "plan.md.j2"}[output_format]
    return redact(_environment.get_template(template).render(
        plan=plan, summary=summary_line(plan), totals=kind_totals(plan.actions)
    ))
