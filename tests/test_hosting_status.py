"""Status a netlet publishes, Prometheus metrics, the app credential, and access to a gone app."""

from __future__ import annotations

import os
import signal
import urllib.request

import pytest
from Pyro5.errors import CommunicationError

import netlets
from rpc import wire
from rpc.credential import client_handshake
from testkit.node import descriptor_xml
from testkit.wait import wait_for
from warrants.errors import NotFound

ECHO = """  <netlet type="w" class="workers:Echo" replicas="2">
    <param name="greeting">hi</param>
  </netlet>"""


def metrics(node) -> str:
    port = node.info["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_published_status_is_shown_per_netlet(node, tmp_path):
    node.launch(descriptor_xml("pub", ECHO), tmp_path)
    node.wait_running("pub")
    view = wait_for(lambda: (v := node.slot("pub", "w/0"))["app_status"] and v, 5, "published status")
    assert view["app_status"] == {"greeting": "hi", "started_pid": view["pid"]}


def test_prometheus_metrics_count_netlets_restarts_and_calls(node, tmp_path):
    node.launch(descriptor_xml("met", ECHO), tmp_path)
    node.wait_running("met")
    text = metrics(node)
    assert 'jtrix_netlets{app="met",state="running"} 2.0' in text
    assert 'jtrix_api_call_seconds_count{method="renew"}' in text
    old = node.slot("met", "w/0")["pid"]
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: node.slot("met", "w/0")["pid"] not in (None, old), 10, "replacement")
    wait_for(lambda: 'jtrix_netlet_restarts_total{app="met"} 1.0' in metrics(node), 5, "the restart counted")


def test_netlet_endpoints_refuse_callers_without_the_app_credential(node, tmp_path):
    node.launch(descriptor_xml("cred", ECHO), tmp_path)
    netlet = node.wait_running("cred")["netlets"][0]
    endpoint, to = netlet["endpoint"], netlet["netlet"]
    for handshake in ("hello", client_handshake(os.urandom(32), "cred", to),
                      client_handshake(node.app_secret("cred"), "other-app", to)):
        with wire.proxy(endpoint) as p:
            p._pyroHandshake = handshake
            with pytest.raises(CommunicationError, match="credential"):
                p.ping()
    good = client_handshake(node.app_secret("cred"), "cred", to)
    with wire.proxy(endpoint) as p:
        p._pyroHandshake = good
        assert p.invoke("echo", ["x"], {}) == "x"
    with wire.proxy(endpoint) as p:  # the same handshake cannot be replayed
        p._pyroHandshake = good
        with pytest.raises(CommunicationError, match="replayed"):
            p.ping()


def test_access_point_reports_an_unknown_or_terminated_app_clearly(node, tmp_path):
    with pytest.raises(NotFound, match="no app named 'ghost'"):
        netlets.connect("ghost")
    node.launch(descriptor_xml("brief", ECHO), tmp_path)
    node.wait_running("brief")
    app = netlets.connect("brief", timeout=5)
    assert app.echo("still") == "still"
    assert node.client.call("terminate", "brief", 1.0, 30)
    with pytest.raises(NotFound, match="no app named 'brief'"):
        app.echo("gone?")
