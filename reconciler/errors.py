"""The error hierarchy. Every family also inherits the matching builtin.

The CLI turns any ``ReconcilerError`` into one line on stderr and exit 1; nothing
below the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass


class ReconcilerError(Exception):
    """Base of every error the tool reports to a user as one clear sentence."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, located at ``file:line:col``."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class ConfigError(ReconcilerError, ValueError):
    """The configuration cannot be used. Carries every issue found, not just the first."""

    def __init__(self, issues: list[ConfigIssue] | str):
        if isinstance(issues, str):
            self.issues: list[ConfigIssue] = []
            super().__init__(issues)
        else:
            self.issues = list(issues)
            super().__init__("\n".join(str(issue) for issue in self.issues))


class StateError(ReconcilerError, RuntimeError):
    """The state database cannot be opened, is of an unknown version, or refused a write."""


class LockError(StateError):
    """Another run holds the lock, or the lock named does not exist."""


class ObserveError(ReconcilerError, OSError):
    """Reading the world failed for one address (unreachable host, missing path...)."""


class PlanError(ReconcilerError, ValueError):
    """A plan cannot be made, loaded or trusted (stale, wrong version, unsafe)."""


class ApplyError(ReconcilerError, RuntimeError):
    """An action failed while changing the world."""


class ToolMissingError(ReconcilerError, FileNotFoundError):
    """An external program (rsync, ssh, mongodump) is not on PATH."""

    def __init__(self, binary: str, install_hint: str):
        super().__init__(f"'{binary}' was not found on PATH; install it ({install_hint}) and run again")
        self.binary = binary
