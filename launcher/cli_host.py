"""``jtrix host start|stop|run|status``: the local hosting node."""

from __future__ import annotations

import click

from launcher.common import client_for, echo_json, home_option, json_option, resolve_home


@click.group("host")
def host() -> None:
    """Run and inspect the hosting node of a home directory."""


def _split_listen(listen: str) -> tuple[str, int]:
    h, _, p = listen.rpartition(":")
    if not p.isdigit() or not h:
        raise click.BadParameter(f"expected HOST:PORT, got {listen!r}", param_hint="--listen")
    return h, int(p)


listen_option = click.option("--listen", default="127.0.0.1:0", show_default=True,
                             help="Address to listen on (port 0: reuse the recorded port, else ephemeral).")


@host.command("run")
@home_option
@listen_option
def run(home, listen) -> None:
    """Run the node in the foreground until SIGTERM/SIGINT (netlets keep running after it)."""
    import logging
    from hosting.daemon import serve
    from hosting.node import NodeConfig

    h, p = _split_listen(listen)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(NodeConfig(home=resolve_home(home), host=h, port=p))


@host.command("start")
@home_option
@listen_option
@json_option
def start(home, listen, as_json) -> None:
    """Start the node in the background (no-op if it already runs); returns once it answers."""
    from hosting.daemon import start_background

    h, p = _split_listen(listen)
    info = start_background(resolve_home(home), h, p)
    if as_json:
        echo_json(info)
    else:
        click.echo(f"hosting node running: pid {info['pid']} at {info['uri']}")


@host.command("stop")
@home_option
def stop(home) -> None:
    """Stop the node (its netlets keep running and re-attach when it starts again)."""
    from hosting.daemon import stop as stop_node

    pid = stop_node(resolve_home(home))
    click.echo(f"hosting node {pid} stopped")


@host.command("status")
@home_option
@json_option
def status(home, as_json) -> None:
    """The node's pid, address, uptime, apps and netlets (exit 3 if not running)."""
    info = client_for(home).call("host_status")
    if as_json:
        echo_json(info)
        return
    for key in ("pid", "address", "service", "uptime_s", "apps", "netlets", "metrics_port", "home"):
        click.echo(f"{key:>12}: {info[key]}")


COMMANDS = [host]
