"""Cluster TLS (rpc/tls.py, hosting/cluster/ca.py, rpc/wire.py): certificates, mutual authentication, stalled
handshakes, and a cluster whose every endpoint speaks TLS.

Real sockets on loopback throughout; the stalled-handshake tests hold real idle connections open
against a real server while another client is served.
"""

from __future__ import annotations

import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from Pyro5.api import expose
from Pyro5.errors import CommunicationError

from rpc import wire
from hosting.node import NodeConfig
from hosting.cluster.ca import ClusterCA, cluster_ca
from hosting.home import save_tls_identity
from rpc.tls import TLSIdentity, client_identity
from testkit.node import RunningNode
from testkit.wait import wait_for
from warrants.errors import BadInput

wire.configure()


@expose
class Echo:
    def echo(self, value):
        return value


@pytest.fixture(scope="module")
def ca() -> ClusterCA:
    return ClusterCA.create("test")


@pytest.fixture
def serve():
    daemons = []

    def start(tls: TLSIdentity | None) -> tuple[wire.Daemon, str]:
        daemon = wire.Daemon("127.0.0.1", 0, tls=tls)
        uri = str(daemon.register(Echo(), "echo"))
        threading.Thread(target=daemon.requestLoop, daemon=True).start()
        daemons.append(daemon)
        return daemon, uri

    yield start
    for daemon in daemons:
        daemon.shutdown()


def _port(uri: str) -> int:
    return int(uri.rsplit(":", 1)[1])


def test_issued_certificates_are_signed_by_the_ca_and_name_their_hosts_and_uses(ca):
    server = x509.load_pem_x509_certificate(ca.issue("node n1", ("127.0.0.1", "n1.example")).cert_pem)
    server.verify_directly_issued_by(ca.cert)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["n1.example"]
    uses = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(uses) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    client = x509.load_pem_x509_certificate(ca.issue("c" * 80).cert_pem)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "c" * 64
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        client.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert ClusterCA.from_json(ca.to_json()).cert == ca.cert


def test_a_call_over_mutual_tls_works_and_the_server_sees_the_clients_certificate(ca, serve):
    daemon, uri = serve(ca.issue("server", ("127.0.0.1",)))
    with wire.proxy(uri, 5, tls=ca.issue("client")) as p:
        assert p.echo({"k": [1, 2]}) == {"k": [1, 2]}
    # the same with the standard library alone: TLS 1.3, the server asks for a certificate
    raw = socket.create_connection(("127.0.0.1", _port(uri)), timeout=5)
    with ca.issue("client").client_context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() == "TLSv1.3"
        peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        assert peer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "server"


def test_clients_without_a_cluster_certificate_are_refused(ca, serve):
    _, uri = serve(ca.issue("server", ("127.0.0.1",)))
    with pytest.raises(CommunicationError, match="TLS required"):  # plain TCP: told why
        with wire.proxy(uri, 5) as p:
            p.echo(1)
    with pytest.raises(CommunicationError):  # a certificate of another cluster
        with wire.proxy(uri, 5, tls=ClusterCA.create("other").issue("client")) as p:
            p.echo(1)
    # TLS without a client certificate: the server ends the connection after the handshake
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.load_verify_locations(cadata=ca.cert_pem.decode())
    raw = socket.create_connection(("127.0.0.1", _port(uri)), timeout=5)
    with anonymous.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            tls.sendall(b"PYRO")
            assert tls.recv(100) == b""  # (a clean close is a refusal too)
            raise ConnectionError("closed")


def test_a_client_refuses_a_server_whose_certificate_is_for_another_address(ca, serve):
    _, uri = serve(ca.issue("server", ("127.0.0.2",)))
    with pytest.raises(CommunicationError, match="IP address mismatch"):
        with wire.proxy(uri, 5, tls=ca.issue("client")) as p:
            p.echo(1)


def test_a_plain_server_is_not_reached_by_a_tls_client(ca, serve):
    _, uri = serve(None)
    with pytest.raises(CommunicationError):
        with wire.proxy(uri, 5, tls=ca.issue("client")) as p:
            p.echo(1)


def test_stalled_handshakes_do_not_block_other_clients(ca, serve, monkeypatch):
    # Handshakes may take a minute here: a good call answered within its 5 s timeout while 40
    # connections stall (silent, or half a ClientHello) shows they hold nobody up.
    monkeypatch.setattr(wire, "FIRST_MESSAGE_S", 60.0)
    _, uri = serve(ca.issue("server", ("127.0.0.1",)))
    stalled = [socket.create_connection(("127.0.0.1", _port(uri)), timeout=5) for _ in range(40)]
    try:
        for s in stalled[::2]:
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello that never ends
        client = ca.issue("client")
        for i in range(5):
            with wire.proxy(uri, 5, tls=client) as p:
                assert p.echo(i) == i
    finally:
        for s in stalled:
            s.close()


def test_a_stalled_handshake_is_dropped_after_the_handshake_timeout(ca, serve, monkeypatch):
    monkeypatch.setattr(wire, "FIRST_MESSAGE_S", 0.5)
    _, uri = serve(ca.issue("server", ("127.0.0.1",)))
    with socket.create_connection(("127.0.0.1", _port(uri)), timeout=10) as silent:
        assert silent.recv(1) == b""  # the server closed it (the recv timeout bounds the wait)


def test_racing_first_nodes_agree_on_one_cluster_ca(etcd):
    results: list[ClusterCA] = []
    threads = [threading.Thread(target=lambda: results.append(cluster_ca(etcd, "race"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.cert_pem for r in results}) == 1
    assert cluster_ca(etcd, "race").cert_pem == results[0].cert_pem


def test_identities_round_trip_through_a_home_with_private_files(ca, tmp_path):
    identity = ca.issue("client of node n1")
    save_tls_identity(identity, tmp_path / "tls", "client")
    assert client_identity(tmp_path) == identity
    for name in ("client.key.pem", "client.crt.pem", "ca.crt.pem"):
        assert stat.S_IMODE((tmp_path / "tls" / name).stat().st_mode) == 0o600
    assert client_identity(tmp_path / "elsewhere") is None
    assert TLSIdentity.from_json(identity.to_json()) == identity


def test_a_node_without_a_cluster_listens_on_loopback_only(tmp_path):
    NodeConfig(home=tmp_path, host="127.0.0.2")
    NodeConfig(home=tmp_path, host="localhost")
    with pytest.raises(BadInput, match="loopback only"):
        NodeConfig(home=tmp_path, host="192.0.2.1")
    result = RunningNode(tmp_path / "h", None).jtrix("host", "start", "--listen", "192.0.2.1:0")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "loopback only" in result.stderr
    assert not (tmp_path / "h" / "node.json").exists()


@pytest.mark.timeout(180)
def test_every_endpoint_of_a_cluster_speaks_tls_with_cluster_certificates(etcd_url, tmp_path):
    """Nodes, netlets and clients of a cluster: the node API and the netlet endpoints complete a
    handshake only with the cluster's certificates, and present certificates naming the node's
    address; the home's client certificate is what the CLI and access points use."""
    from testkit.etcd import unique_prefix
    from hosting.client import HostingClient
    from hosting.daemon import start_background
    from testkit.node import cleanup_node
    from test_cluster import kvstore_master, launch_kvstore
    from testkit.node import master_of

    url = etcd_url + unique_prefix().rstrip("/")
    home = tmp_path / "n1"
    start_background(home, cluster=url, name="n1")
    node = RunningNode(home, HostingClient.for_home(home))
    try:
        identity = client_identity(home)
        assert identity is not None and node.client.tls == identity
        launch_kvstore(node, tmp_path)
        master = master_of(kvstore_master(node))
        endpoints = [node.info["uri"]] + [n["endpoint"] for n in node.app("kvstore")["netlets"] if n["endpoint"]]
        assert len(endpoints) == 4
        for endpoint in endpoints:
            host, port = endpoint.rsplit("@", 1)[1].rsplit(":", 1)
            raw = socket.create_connection((host, int(port)), timeout=5)
            with identity.client_context.wrap_socket(raw, server_hostname=host) as tls:
                peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
            peer.verify_directly_issued_by(x509.load_pem_x509_certificate(identity.ca_pem))
            with pytest.raises(CommunicationError, match="TLS required"):
                with wire.proxy(endpoint, 5) as p:
                    p.hello()
        assert master["endpoint"] in endpoints
        # the access point works over TLS (through the home's client identity)
        import netlets

        kv = netlets.connect("kvstore", home)
        try:
            kv.put("tls", "yes")
            assert kv.get_latest("tls") == "yes"
        finally:
            kv.close()
        wait_for(lambda: node.jtrix("status", "kvstore").returncode == 0, 10, "jtrix status over TLS")
    finally:
        cleanup_node(node)
