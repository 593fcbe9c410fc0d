"""Which config file a command reads. Standard library only: the no-change memo
(engine/memo.py) finds the config this way before anything heavy is loaded."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CONFIG_VARIABLE = "RECONCILER_CONFIG"
DEFAULT_CONFIG = "reconciler.toml"


def discover_config_path(cli_value: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """``--config``, else ``$RECONCILER_CONFIG``, else ``./reconciler.toml`` (made absolute)."""
    chosen = cli_value or environ.get(CONFIG_VARIABLE) or DEFAULT_CONFIG
    return Path(chosen).expanduser().absolute()
