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
                             help="Address to listen on (port 0: reuse the recorded port, else ephemeral);"
                                  " loopback only without --cluster.")
cluster_option = click.option("--cluster", default=None, envvar="JTRIX_CLUSTER", show_envvar=True,
                              metavar="URL", help="Join the cluster kept in etcd at URL "
                              "(http://HOST:PORT[/PREFIX]); without it the node is a cluster of one.")
name_option = click.option("--name", default=None, help="This node's name in the cluster (default: its service id).")
ttl_option = click.option("--membership-ttl", "membership_ttl", type=int, default=3, show_default=True,
                          help="Seconds without renewing before the cluster declares this node dead "
                               "(at least etcd's lease minimum, 2 s by default).")


confine_option = click.option("--confine", type=click.Choice(["auto", "uid", "landlock", "none"]), default="auto",
                              show_default=True, help="How netlets are confined: auto = a uid per app as root, "
                              "else Landlock (see README, Security).")


def etcd_tls_options(f):
    """``--etcd-ca/--etcd-cert/--etcd-key`` (and ``JTRIX_ETCD_*``): TLS to an https etcd."""
    for flag, env, what in (("--etcd-key", "JTRIX_ETCD_KEY", "this node's client key for etcd (PEM)"),
                            ("--etcd-cert", "JTRIX_ETCD_CERT", "this node's client certificate for etcd (PEM)"),
                            ("--etcd-ca", "JTRIX_ETCD_CA", "CA that signed etcd's certificate (PEM; default: "
                                                           "the system's)")):
        f = click.option(flag, default=None, envvar=env, show_envvar=True, metavar="FILE", help=what)(f)
    return f


def _node_config(home, listen, cluster, name, etcd_ca=None, etcd_cert=None, etcd_key=None, membership_ttl=3,
                 confine="auto"):
    from hosting.daemon import etcd_tls_of
    from hosting.node import NodeConfig

    h, p = _split_listen(listen)
    return NodeConfig(home=resolve_home(home), host=h, port=p, cluster=cluster, name=name,
                      etcd_tls=etcd_tls_of(etcd_ca, etcd_cert, etcd_key), membership_ttl=membership_ttl,
                      confine=confine)


@host.command("run")
@home_option
@listen_option
@cluster_option
@name_option
@ttl_option
@etcd_tls_options
@confine_option
def run(home, listen, cluster, name, membership_ttl, etcd_ca, etcd_cert, etcd_key, confine) -> None:
    """Run the node in the foreground until SIGTERM/SIGINT (netlets keep running after it)."""
    import logging
    from hosting.daemon import serve

    config = _node_config(home, listen, cluster, name, etcd_ca, etcd_cert, etcd_key, membership_ttl, confine)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(config)


@host.command("start")
@home_option
@listen_option
@cluster_option
@name_option
@ttl_option
@etcd_tls_options
@confine_option
@json_option
def start(home, listen, cluster, name, membership_ttl, etcd_ca, etcd_cert, etcd_key, confine, as_json) -> None:
    """Start the node in the background (no-op if it already runs); returns once it answers."""
    from hosting.daemon import start_background

    config = _node_config(home, listen, cluster, name, etcd_ca, etcd_cert, etcd_key, membership_ttl,
                          confine)  # exit 2 now
    info = start_background(config.home, config.host, config.port, cluster=cluster, name=name,
                            etcd_tls=config.etcd_tls, membership_ttl=membership_ttl, confine=confine)
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
    for key in ("name", "pid", "address", "service", "cluster", "uptime_s", "apps", "netlets", "metrics_port",
                "home"):
        click.echo(f"{key:>12}: {info.get(key)}")
    confinement = info.get("confinement") or {}
    if confinement:
        click.echo(f"{'confinement':>12}: {confinement.get('mode')} ({confinement.get('why')}; "
                   f"{confinement.get('landlock')})")
    nodes = info.get("nodes") or []
    if isinstance(nodes, dict):
        click.echo(f"{'nodes':>12}: unknown ({nodes.get('error')})")
        return
    click.echo(f"{'nodes':>12}: {len(nodes)}")
    for n in nodes:
        health = "healthy" if n.get("healthy") else "late"
        lease = f", lease {n['lease_s']} s" if "lease_s" in n else ""
        click.echo(f"{'':>14}{n['name']:<20} {health:<8} pid {n.get('pid')} at {n.get('uri')}{lease}")


COMMANDS = [host]
