"""Commands about the config file: init, validate, fmt, schema."""

from __future__ import annotations

import difflib
import json
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import click

from reconciler import hints
from reconciler.cli.app import App
from reconciler.config.fmt import format_toml
from reconciler.config.model import build_config_model
from reconciler.errors import ConfigError
from reconciler.fsutil import atomic_write_text

SCHEMA_ID = "https://reconciler.invalid/schemas/reconciler.schema.json"


def starter_names() -> list[str]:
    folder = resources.files("reconciler.config") / "starters"
    return sorted(entry.name[: -len(".toml")] for entry in folder.iterdir() if entry.name.endswith(".toml"))


def starter_text(name: str) -> str:
    """The text of the starter config ``name``. Raises ConfigError listing the valid names."""
    if name not in starter_names():
        raise ConfigError(f"no example named {name!r}; choose one of: {', '.join(starter_names())}")
    return (resources.files("reconciler.config") / "starters" / f"{name}.toml").read_text(encoding="utf-8")


def starter_summary(name: str) -> str:
    """What starter ``name`` is for: its first comment line after ``#:schema``."""
    for line in starter_text(name).splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return ""


SCHEMA_FILE = "reconciler.schema.json"


def schema_reference() -> str:
    """What a written config's ``#:schema`` line names: the schema file this installation ships
    (``reconciler/config/reconciler.schema.json``; ``schemas/`` in the repository links to it)."""
    return Path(str(resources.files("reconciler.config") / SCHEMA_FILE)).resolve().as_uri()


def with_replica(text: str, origin: str, replica: str) -> str:
    """The starter ``text`` with an origin and a replica to reconcile (so the config does something
    as soon as it is written). Raises ConfigError when the origin's name would not be a safe one."""
    import tomlkit

    name = Path(origin.rstrip("/")).name or "origin"
    name = "".join(char if char.isalnum() or char in "._-" else "-" for char in name).lstrip("-.") or "origin"
    return (text.rstrip("\n") + "\n\n# Written by `reconciler init --origin … --replica …`:\n"
            f"[origins.{tomlkit.key(name).as_string()}]\nroot = {tomlkit.string(origin).as_string()}\n"
            f'settle = "2m"          # a file is copied once its mtime is at least this old\n\n'
            f"[replicas.{tomlkit.key(replica).as_string()}]\n")


@click.command()
@click.option("--example", "example", default="starter", show_default=True, help="Which starter to write.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--list", "list_examples", is_flag=True, help="List the starters, each with what it is for, and exit.")
@click.option("--origin", metavar="PATH", help="A directory (or ssh:// URL) whose files must have a replica.")
@click.option("--replica", metavar="PATH", help="Where the replica lives (it must exist: a mounted disk, say).")
@click.pass_obj
def init(app: App, example: str, force: bool, list_examples: bool, origin: str | None, replica: str | None) -> None:
    """Write a commented starter reconciler.toml (at --config, default ./reconciler.toml); with
    --origin and --replica it also declares that replica, so `plan` has something to do."""
    if list_examples:
        for name in starter_names():
            click.echo(f"{name:<12} {starter_summary(name)}")
        return
    if (origin is None) != (replica is None):
        raise ConfigError("give --origin and --replica together (or neither)")
    text = starter_text(example).replace("https://reconciler.invalid/schemas/reconciler.schema.json",
                                         schema_reference(), 1)
    if origin is not None and replica is not None:
        text = with_replica(text, origin, replica)
    path = app.config_path
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it or --config to write elsewhere")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    except OSError as error:
        raise ConfigError(f"{path}: cannot write the config ({error.strerror})") from None
    click.echo(f"Wrote {path}. Edit it, then run {hints.command('validate')} and {hints.command('plan')}.", err=True)


@click.command()
@click.pass_obj
def validate(app: App) -> None:
    """Load and check the config; every problem as FILE:LINE:COL: message."""
    loaded = app.config
    click.echo(f"{loaded.path}: valid")


@click.command()
@click.option("--check", is_flag=True, help="Change nothing; exit 1 when the file is not formatted.")
@click.option("--diff", "show_diff", is_flag=True, help="Print the changes as a unified diff.")
@click.pass_obj
def fmt(app: App, check: bool, show_diff: bool) -> int:
    """Normalise the config's layout, keeping comments and key order."""
    path = app.config_path
    try:
        original = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file ({error.strerror})") from None
    formatted = format_toml(original, str(path))
    if formatted == original:
        click.echo(f"{path} is already formatted", err=True)
        return 0
    if show_diff or check:
        diff = difflib.unified_diff(
            original.splitlines(keepends=True), formatted.splitlines(keepends=True), str(path), f"{path} (formatted)"
        )
        click.echo("".join(diff), nl=False)
    if check:
        click.echo(f"{path} is not formatted; run {hints.command('fmt')} to fix it", err=True)
        return 1
    if show_diff:  # only shows
        return 0
    atomic_write_text(path, formatted)
    click.echo(f"Formatted {path}", err=True)
    return 0


def config_schema(app: App) -> dict[str, object]:
    """The JSON Schema of the config, with the kinds this installation has."""
    from pydantic.json_schema import GenerateJsonSchema

    from reconciler.units import format_duration

    class ConfigSyntax(GenerateJsonSchema):
        """Defaults as the config writes them: a duration "7d", not pydantic's ISO "P7D", which
        the duration's own pattern refuses (an editor that fills in the default would break the file)."""

        def encode_default(self, dft: Any) -> Any:
            return format_duration(dft) if isinstance(dft, timedelta) else super().encode_default(dft)

    schema = build_config_model(app.kinds).model_json_schema(schema_generator=ConfigSyntax)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


@click.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE.")
@click.option("--format", "output_format", type=click.Choice(["json", "markdown"]), default="json", show_default=True,
              help="json: the JSON Schema; markdown: the config reference (docs/reference/config.md).")
@click.pass_obj
def schema(app: App, output: Path | None, output_format: str) -> None:
    """Print the JSON Schema of the config (for editors: Taplo, Even Better TOML), or the reference."""
    if output_format == "markdown":
        from reconciler.config.reference import render_reference

        text = render_reference(config_schema(app))
    else:
        text = json.dumps(config_schema(app), indent=2, sort_keys=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        atomic_write_text(output.resolve(), text)  # through a link (schemas/ links to the packaged copy)


COMMANDS = [init, validate, fmt, schema]
