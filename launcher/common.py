"""Options and helpers shared by the ``jtrix`` subcommands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from hosting.home import default_home


def resolve_home(home: str | None) -> Path:
    return Path(home).expanduser().resolve() if home else default_home().resolve()


home_option = click.option("--home", "home", type=click.Path(file_okay=False), default=None,
                           envvar="JTRIX_HOME", show_envvar=True,
                           help="The hosting node's home directory (default ~/.jtrix).")
warrant_option = click.option("--warrant", "warrant", type=click.Path(dir_okay=False), default=None,
                              help="Act with this warrant instead of the node's admin warrant.")
key_option = click.option("--key", "key", type=click.Path(dir_okay=False), default=None,
                          help="Private key proving possession of --warrant's holder.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def client_for(home: str | None, warrant: str | None = None, key: str | None = None):
    from hosting.client import HostingClient

    return HostingClient.for_home(resolve_home(home), Path(warrant) if warrant else None,
                                  Path(key) if key else None)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
