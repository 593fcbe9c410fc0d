"""Which state database a command uses. Standard library only: the no-change memo
(engine/memo.py) finds a SQLite state this way before anything heavy is loaded;
store.py turns the choice into a full URL."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

from reconciler.errors import ConfigError

DEFAULT_STATE_PATH = Path("state") / "reconciler.db"
STATE_VARIABLE = "RECONCILER_STATE"
SQLITE_PREFIX = "sqlite:///"


def chosen_state_url(cli_url: str | None, url: str | None, url_env: str | None,
                     environ: Mapping[str, str] = os.environ) -> str | None:
    """``--state`` (or ``$RECONCILER_STATE``), else the variable ``[state] url_env`` names, else
    ``[state] url``; None for the default (SQLite at ``state/reconciler.db`` next to the config).

    Raises ConfigError when ``url_env`` names an unset variable.
    """
    from reconciler.secrets import remember, remember_variable

    remember(cli_url)
    remember(url)
    remember_variable(url_env)
    chosen = cli_url
    if not chosen and url_env:
        chosen = environ.get(url_env)
        if not chosen:
            raise ConfigError(f"[state] url_env names ${url_env}, which is not set; export it or set [state] url")
    return chosen or url or None


def plain_sqlite_file(chosen: str | None, config_dir: Path) -> Path | None:
    """The file of a chosen URL that is plainly a SQLite file (``sqlite:///PATH``, no query
    part; relative to the config's directory; percent-escapes decoded, as SQLAlchemy
    decodes them), or of the default; None for anything else."""
    if chosen is None:
        return config_dir / DEFAULT_STATE_PATH
    if not chosen.startswith(SQLITE_PREFIX) or "?" in chosen:
        return None
    database = unquote(chosen[len(SQLITE_PREFIX):])
    if not database or database == ":memory:":
        return None
    path = Path(database).expanduser()
    return path if path.is_absolute() else config_dir / path
