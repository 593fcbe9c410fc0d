"""``reconciler`` entry point: global options, command registration, error -> exit code."""

from __future__ import annotations

import functools
import io
import sys
import traceback

import click

from reconciler import __version__
from reconciler.cli import config_commands, report_command, run_commands
from reconciler.cli.app import App, setup_logging
from reconciler.errors import ConfigError, ReconcilerError
from reconciler.secrets import redact
from reconciler.state.location import STATE_VARIABLE

EXIT_ERROR = 1


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_option",
    metavar="PATH",
    help="Config file. Default: $RECONCILER_CONFIG, else ./reconciler.toml.",
)
@click.option(
    "--state",
    "state_option",
    metavar="URL",
    envvar=STATE_VARIABLE,
    help="State database URL (overrides [state] url). Default: SQLite at state/reconciler.db next to the config.",
)
@click.option("-v", "--verbose", count=True, help="More detail on stderr (debug logs).")
@click.version_option(__version__, prog_name="reconciler")
@click.pass_context
def cli(context: click.Context, config_option: str | None, state_option: str | None, verbose: int) -> None:
    """Keep research data where its owners declared it should be.

    Write the desired state in reconciler.toml, review it like code, then
    `reconciler plan` to see what would change and `reconciler apply` to do it
    (or `reconciler reconcile` from cron).
    """
    app = App(config_option, state_option, verbose)
    context.obj = app
    context.call_on_close(app.close)
    setup_logging(verbose, timestamps=False)


for module in (config_commands, run_commands, report_command):
    for command in module.COMMANDS:
        cli.add_command(command)


@functools.cache
def add_kind_commands() -> None:
    """Add every resource kind's own commands (``replicas list``…), once."""
    try:
        from reconciler.engine.registry import load_kinds

        for kind in load_kinds():
            for command in kind.commands():
                cli.add_command(command)
    except ReconcilerError:
        pass  # reported when a command needs the kinds


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; ReconcilerError -> one line on stderr and exit 1; usage errors exit 1 too."""
    add_kind_commands()
    try:
        code = cli.main(args=argv, prog_name="reconciler", standalone_mode=False)
    except ConfigError as error:
        click.echo(redact(str(error) if error.issues else f"Error: {error}"), err=True)
        sys.exit(EXIT_ERROR)
    except ReconcilerError as error:
        click.echo(redact(f"Error: {error}"), err=True)
        sys.exit(EXIT_ERROR)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_ERROR)
    except click.ClickException as error:
        shown = io.StringIO()
        error.show(file=shown)
        sys.stderr.write(redact(shown.getvalue()))
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as error:  # a bug: say so in one line; the traceback only with -v
        if "-v" in (argv or sys.argv) or "--verbose" in (argv or sys.argv):
            sys.stderr.write(redact(traceback.format_exc()))
        click.echo(redact(f"Error: internal error ({type(error).__name__}: {error}); please report it, "
                          "with the output of the same command run with -v"), err=True)
        sys.exit(EXIT_ERROR)
    sys.exit(code if isinstance(code, int) else 0)
