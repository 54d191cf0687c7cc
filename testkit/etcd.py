"""A private etcd on free loopback ports, started and stopped by pid.

:class:`EtcdServer` starts ``etcd`` with its client and peer ports chosen free
and its data directory under a root of its own, and returns once it answers;
``stop`` ends it (SIGTERM, then SIGKILL, by process group). It dies with the
process that started it even if that one is SIGKILLed. Users share one server
by taking a key prefix each (:func:`unique_prefix`), so they never see each
other's keys. The tests' ``etcd_url`` / ``etcd`` fixtures (tests/conftest.py)
are one server per session and a prefix per test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import requests


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_tls_files(directory: Path) -> dict[str, str]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (PEM files).

    Returns paths: ``ca``, ``server_cert``, ``server_key``, ``client_cert``, ``client_key``.
    """
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def build(name, key, issuer_name, issuer_key, ca=False, usage=(), san=None):
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
             .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage:
            b = b.add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def write(name, data):
        path = directory / name
        path.write_bytes(data)
        return str(path)

    def key_pem(key):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jtrix test etcd CA")])
    ca = build("jtrix test etcd CA", ca_key, ca_name, ca_key, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    # clientAuth too: etcd's own gRPC gateway dials its gRPC server with this certificate
    server = build("etcd", server_key, ca_name, ca_key,
                   usage=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
                   san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    client = build("jtrix-node", client_key, ca_name, ca_key, usage=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    pem = serialization.Encoding.PEM
    return {"ca": write("ca.pem", ca.public_bytes(pem)),
            "server_cert": write("server.pem", server.public_bytes(pem)), "server_key": write("server.key", key_pem(server_key)),
            "client_cert": write("client.pem", client.public_bytes(pem)), "client_key": write("client.key", key_pem(client_key))}


class EtcdServer:
    """One etcd process on loopback; ``url`` is its client URL.

    With ``tls`` (from :func:`make_tls_files`) it serves HTTPS only and requires a client
    certificate signed by that CA.
    """

    def __init__(self, root: Path, tls: dict[str, str] | None = None, host: str = "127.0.0.1") -> None:
        self.root = root
        self.tls = tls
        self.host = host
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, attempts: int = 3) -> None:
        for _ in range(attempts):  # a chosen free port can be taken before etcd binds it
            client, peer = free_port(), free_port()
            self.url = f"{'https' if self.tls else 'http'}://{self.host}:{client}"
            tls_flags = ["--cert-file", self.tls["server_cert"], "--key-file", self.tls["server_key"],
                         "--client-cert-auth", "--trusted-ca-file", self.tls["ca"]] if self.tls else []
            log = open(self.root / "etcd.log", "ab")
            self.proc = subprocess.Popen(
                ["etcd", "--name", "test", "--data-dir", str(self.root / f"data-{client}"),
                 "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-cluster", f"test=http://127.0.0.1:{peer}",
                 "--log-level", "warn", *tls_flags],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
            log.close()
            if self._wait_ready(10.0):
                return
            self.stop()
        raise RuntimeError(f"etcd did not start (see {self.root / 'etcd.log'})")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                tls = {"verify": self.tls["ca"], "cert": (self.tls["client_cert"], self.tls["client_key"])} \
                    if self.tls else {}
                if requests.get(self.url + "/health", timeout=0.5, **tls).json().get("health") == "true":
                    return True
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def unique_prefix() -> str:
    return f"/jtrix/test-{uuid.uuid4().hex[:12]}/"
