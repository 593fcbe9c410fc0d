"""``reconciler report --html FILE``: the data management report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from reconciler.errors import ApplyError
from reconciler.fsutil import atomic_write_text


@click.command("report")
@click.option("--html", "html_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report here (one self-contained HTML file).")
@click.pass_obj
def report_command(app: Any, html_path: Path) -> None:
    """Projects and Live sessions (sizes and states per datatype), replica completeness,
    backup freshness and retention, and their history as charts, as one HTML page."""
    from reconciler.render.report import render_report
    from reconciler.report.collect import collect

    report = collect(app)
    try:
        atomic_write_text(html_path, render_report(report))
    except OSError as error:
        raise ApplyError(f"cannot write {html_path}: {error.strerror}; does its directory exist and is it "
                         "writable?") from None
    click.echo(f"wrote {html_path} ({', '.join(report.counts) or 'nothing configured'})", err=True)
    for problem in report.problems:
        click.echo(f"warning: {problem}", err=True)


COMMANDS = [report_command]
