"""The ``jtrix`` command: one click group, subcommands registered from small modules.

Contract for every subcommand: user errors raise a ``warrants.errors.JtrixError``
subclass; :func:`main` prints its one-line message to stderr and exits with its
``exit_code`` (0 ok, 1 failure, 2 bad usage or input, 3 not running / not
found). No traceback is shown for a ``JtrixError``.
"""

from __future__ import annotations

import sys

import click

from warrants.errors import JtrixError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jtrix")
@click.option("--host", "host", default=None, envvar="JTRIX_HOST", show_envvar=True, metavar="URI",
              help="Talk to the hosting node at this Pyro URI (any node of a cluster) instead of the one "
                   "recorded in --home; the home still supplies the warrant unless --warrant is given.")
def cli(host: str | None) -> None:
    """jtrix: leased hosting for fault-tolerant Python applications."""
    from launcher import common

    common.target_host = host


def _register_subcommands() -> None:
    """Attach each command module's group to ``cli`` (import here to keep start-up lazy-safe)."""
    from launcher import cli_apps, cli_call, cli_host, cli_warrant

    # cli_apps: status/events/logs/terminate/kill; cli_call: `jtrix call` through an access point.
    for module in (cli_warrant, cli_host, cli_apps, cli_call):
        for command in module.COMMANDS:
            cli.add_command(command)


_register_subcommands()


def run_cli(command: click.BaseCommand, args: list[str] | None = None, prog_name: str = "jtrix") -> int:
    """Run a click command, mapping ``JtrixError`` to its exit code and a one-line message."""
    try:
        result = command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except JtrixError as err:
        click.echo(f"{prog_name}: {err}", err=True)
        return err.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as err:  # usage errors: exit 2
        err.show()
        return 2 if err.exit_code in (1, 2) else err.exit_code
    except KeyboardInterrupt:
        return 130
    # click returns ctx.exit()'s code here; a command may also return its exit code.
    return result if isinstance(result, int) else 0


def main() -> None:
    """Entry point of the ``jtrix`` console script."""
    sys.exit(run_cli(cli))
