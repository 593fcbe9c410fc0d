"""What every kind's listing command prints (``replicas list``, ``projects list``, ``users list``...).

One implementation, so that every listing behaves alike: each part that could not be read is an
``error:`` line on stderr, the rows are printed as JSON (``--json``) or as text, and the command
exits 1 when any part could not be read: a listing never looks complete when it is not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

Row = dict[str, Any]


def emit_listing(rows: Sequence[Row], as_json: bool, text: Callable[[Row], str | Iterable[str]], *,
                 problems: Iterable[str] = (), empty: str | None = None, exit_code_when_rows: int = 0) -> None:
    """Print ``rows``; ``text`` gives a row's line (or lines). ``empty`` is printed (text only) when
    there is no row; ``exit_code_when_rows`` is for listings whose rows are themselves bad news
    (``inventory lost``)."""
    problems = list(problems)
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if as_json:
        click.echo(json.dumps(list(rows), indent=2, default=str))
    elif not rows and empty is not None:
        click.echo(empty)
    else:
        for row in rows:
            lines = text(row)
            for line in [lines] if isinstance(lines, str) else lines:
                click.echo(line)
    if problems:
        raise SystemExit(1)
    if rows and exit_code_when_rows:
        raise SystemExit(exit_code_when_rows)
