"""The ``reconciler`` program's entry point (the console script and ``python -m
reconciler``): start-up and exit tuned for a short-lived process.

Loading SQLAlchemy, pydantic and the resource kinds creates a few hundred thousand
objects that live as long as the process. The cyclic garbage collector would walk them
again and again: during the imports (a collection every few hundred allocations), on
every full collection of the run, and once more at exit. So the collector is off while
the modules load, and what they created is then frozen out of all later collections
(``gc.freeze``); objects the run creates are collected as usual. Measured on a plan with
nothing to do: about 0.15 s less of 0.6 s.
"""

from __future__ import annotations

import gc


def main() -> None:
    gc.disable()
    try:
        from reconciler.cli.main import add_kind_commands, main as run

        add_kind_commands()
        gc.freeze()
    finally:
        gc.enable()
    run()
