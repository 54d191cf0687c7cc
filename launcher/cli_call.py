"""``jtrix call APP METHOD [ARGS...]``: call an app through an access point."""

from __future__ import annotations

import json

import click

from launcher.common import echo_json, home_option, json_option, key_option, resolve_home, warrant_option


def parse_arg(text: str):
    """A JSON value if the text is one (``42``, ``null``, ``"x"``, ``[1]``), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@click.command("call")
@click.argument("app")
@click.argument("method")
@click.argument("args", nargs=-1)
@home_option
@warrant_option
@key_option
@click.option("--timeout", default=30.0, show_default=True, help="Give up retrying across failovers after S seconds.")
@json_option
def call(app, method, args, home, warrant, key, timeout, as_json) -> None:
    """Call METHOD of APP with ARGS (JSON values or plain strings); print the result.

    Commands go to the master, queries where they are declared to run; across
    a failover the call is retried with the same request id (never applied twice).
    """
    import netlets

    proxy = netlets.connect(app, resolve_home(home), warrant=warrant, key=key, timeout=timeout)
    try:
        result = proxy.call(method, *[parse_arg(a) for a in args])
    finally:
        proxy.close()
    if as_json:
        echo_json(result)
    elif isinstance(result, str):
        click.echo(result)
    elif result is not None:
        click.echo(json.dumps(result))


COMMANDS = [call]
