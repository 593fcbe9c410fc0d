"""Commands to run next, as reconciler prints them in hints and errors: with the global options
the user gave (``--config``, ``--state``), so a hint can be pasted as it stands.

The CLI records the options once per invocation (``remember_options``); library code builds
hints with ``command``. Standard library only.
"""

from __future__ import annotations

import shlex

_options: list[str] = []


def remember_options(config: str | None, state: str | None) -> None:
    """Record the global options of this invocation (only those given on the command line)."""
    _options[:] = [*(["--config", config] if config else []), *(["--state", state] if state else [])]


def command(*words: str) -> str:
    """``reconciler [global options] WORDS…`` quoted for a shell, in backticks."""
    from reconciler.secrets import redact

    return "`" + redact(shlex.join(["reconciler", *_options, *words])) + "`"
