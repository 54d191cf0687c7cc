"""Nodes and etcd over TLS with client certificates (etcd's own TLS; a private etcd per test)."""

from __future__ import annotations

import json
import shutil

import pytest

from hosting.cluster.etcd import Etcd, EtcdUnavailable, TLSFiles
from testkit.etcd import EtcdServer, make_tls_files, unique_prefix
from testkit.node import RunningNode, cleanup_node
from testkit.wait import wait_for


@pytest.fixture
def tls_etcd(tmp_path):
    if shutil.which("etcd") is None:
        pytest.skip("etcd not installed (scripts/test.sh installs Debian's etcd-server as root)")
    files = make_tls_files(tmp_path / "tls")
    server = EtcdServer(tmp_path / "etcd", tls=files)
    (tmp_path / "etcd").mkdir()
    server.start()
    try:
        yield server.url, files
    finally:
        server.stop()


def test_etcd_over_tls_needs_the_ca_and_a_client_certificate(tls_etcd):
    url, files = tls_etcd
    good = Etcd(url, unique_prefix(), tls=TLSFiles(files["ca"], files["client_cert"], files["client_key"]))
    good.put("k", b"v")
    assert good.get("k").value == b"v"
    with pytest.raises(EtcdUnavailable):  # no client certificate: etcd refuses the handshake
        Etcd(url, good.prefix, tls=TLSFiles(files["ca"]), timeout=2).get("k")
    with pytest.raises(EtcdUnavailable):  # etcd's certificate is not signed by a CA we trust
        Etcd(url, good.prefix, timeout=2).get("k")


def test_a_node_joins_a_tls_etcd_from_the_cli(tls_etcd, tmp_path):
    url, files = tls_etcd
    node = RunningNode(tmp_path / "n1", None)
    cluster = url + unique_prefix().rstrip("/")
    tls_args = ["--etcd-ca", files["ca"], "--etcd-cert", files["client_cert"], "--etcd-key", files["client_key"]]
    try:
        started = node.jtrix("host", "start", "--cluster", cluster, "--name", "n1", *tls_args)
        assert started.returncode == 0, started.stderr
        status = json.loads(node.jtrix("host", "status", "--json").stdout)
        assert [n["name"] for n in status["nodes"]] == ["n1"]
    finally:
        from hosting.client import HostingClient
        if node.info:
            node.client = HostingClient.for_home(node.home)
            cleanup_node(node)
    other = RunningNode(tmp_path / "n2", None)
    missing_key = other.jtrix("host", "start", "--cluster", cluster, "--etcd-ca", files["ca"],
                              "--etcd-cert", files["client_cert"])
    assert missing_key.returncode == 2 and "needs its key" in missing_key.stderr
    plain = other.jtrix("host", "start", "--cluster", url.replace("https", "http"), *tls_args)
    assert plain.returncode == 2 and "need an https:// --cluster URL" in plain.stderr
    gone = other.jtrix("host", "start", "--cluster", cluster, "--etcd-ca", str(tmp_path / "nope.pem"))
    assert gone.returncode == 2 and "not a readable file" in gone.stderr
    assert "Traceback" not in missing_key.stderr + plain.stderr + gone.stderr
