"""Rendering plans as text, markdown or JSON."""

from reconciler.render.plans import FORMATS, render_plan, summary_line

__all__ = ["FORMATS", "render_plan", "summary_line"]
