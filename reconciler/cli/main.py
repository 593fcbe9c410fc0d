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
from reconciler.cli.argv import global_options_first
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
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Log lines on stderr as text, or as one JSON object each (time, level, address, action, message).")
@click.version_option(__version__, prog_name="reconciler")
@click.pass_context
def cli(context: click.Context, config_option: str | None, state_option: str | None, verbose: int,
        log_format: str) -> None:
    """Keep research data where its owners declared it should be.

    Write the desired state in reconciler.toml, review it like code, then
    `reconciler plan` to see what would change and `reconciler apply` to do it
    (or `reconciler reconcile` from cron).
    """
    from reconciler.hints import remember_options

    given = context.get_parameter_source("state_option") == click.core.ParameterSource.COMMANDLINE
    remember_options(config_option, state_option if given else None)
    app = App(config_option, state_option, verbose, log_format)
    context.obj = app
    context.call_on_close(app.close)
    setup_logging(verbose, timestamps=False, log_format=log_format)


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


def _json_logs(argv: list[str]) -> bool:
    """Whether the command line asks for ``--log-format json`` (read before click parsed it)."""
    for index, word in enumerate(argv):
        if word == "--log-format=json" or (word == "--log-format" and argv[index + 1:index + 2] == ["json"]):
            return True
    return False


def _say_error(text: str, argv: list[str]) -> None:
    """The one error line on stderr: plain, or a JSON log object with ``--log-format json``."""
    if _json_logs(argv):
        import json
        from datetime import datetime, timezone

        click.echo(json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                               "level": "error", "logger": "reconciler", "message": redact(text)}), err=True)
    else:
        click.echo(redact(text), err=True)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; ReconcilerError -> one line on stderr and exit 1; usage errors exit 1 too."""
    words = global_options_first(list(sys.argv[1:] if argv is None else argv))
    add_kind_commands()
    try:
        code = cli.main(args=words, prog_name="reconciler", standalone_mode=False)
    except ConfigError as error:
        _say_error(str(error) if error.issues else f"Error: {error}", words)
        sys.exit(EXIT_ERROR)
    except ReconcilerError as error:
        _say_error(f"Error: {error}", words)
        sys.exit(EXIT_ERROR)
    except click.exceptions.Abort as error:
        if isinstance(error.__context__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            from reconciler.cli.run_commands import interrupted_exit

            click.echo("Interrupted.", err=True)
            sys.exit(interrupted_exit())
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_ERROR)
    except click.ClickException as error:
        shown = io.StringIO()
        error.show(file=shown)
        sys.stderr.write(redact(shown.getvalue()))
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        from reconciler.cli.run_commands import interrupted_exit

        click.echo("Interrupted.", err=True)
        sys.exit(interrupted_exit())
    except Exception as error:  # a bug: say so in one line; the traceback only with -v
        if "-v" in (argv or sys.argv) or "--verbose" in (argv or sys.argv):
            sys.stderr.write(redact(traceback.format_exc()))
        _say_error(f"Error: internal error ({type(error).__name__}: {error}); please report it, "
                   "with the output of the same command run with -v", words)
        sys.exit(EXIT_ERROR)
    sys.exit(code if isinstance(code, int) else 0)
