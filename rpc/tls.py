"""TLS identities: a certificate, its key and the cluster CA, and the contexts built from them.

Safety model (what must hold):
  * Mutual authentication. A TLS endpoint (a node's API, a netlet's endpoint)
    completes a handshake only with a peer presenting a certificate issued by
    the cluster CA; a client completes one only with a server whose
    certificate, from the same CA, names the address it dialled (IP or DNS
    subject alternative name). TLS 1.3 only; keys are ECDSA P-256.
  * Authority is still the warrant's (and, for netlets, the app credential's):
    a cluster certificate proves membership of the cluster, never rights.

Identities are issued by the cluster's CA (``hosting.cluster.ca``); a home
keeps its clients' one in ``tls/`` (``client_identity``, written by
``hosting.home.save_tls_identity``). A single node (no ``--cluster``) speaks
plain TCP and only on loopback.
"""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TLSIdentity:
    """A certificate, its key and the cluster CA: everything one process needs for TLS.

    The same identity serves (``server_context``) and connects
    (``client_context``); contexts are built once per identity.
    """

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    def _context(self, purpose: int) -> ssl.SSLContext:
        ctx = ssl.SSLContext(purpose)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=self.ca_pem.decode())
        # load_cert_chain wants a path: an anonymous in-memory file keeps the key off disk.
        fd = os.memfd_create("jtrix-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, self.cert_pem + self.key_pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return ctx

    @functools.cached_property
    def server_context(self) -> ssl.SSLContext:
        """Requires a client certificate from the cluster CA."""
        return self._context(ssl.PROTOCOL_TLS_SERVER)

    @functools.cached_property
    def client_context(self) -> ssl.SSLContext:
        """Checks the server's certificate against the CA and the dialled address."""
        return self._context(ssl.PROTOCOL_TLS_CLIENT)

    def to_json(self) -> dict[str, str]:
        return {"cert": self.cert_pem.decode(), "key": self.key_pem.decode(), "ca": self.ca_pem.decode()}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> "TLSIdentity":
        return cls(data["cert"].encode(), data["key"].encode(), data["ca"].encode())

    def files(self, name: str) -> dict[str, bytes]:
        """What ``load(directory, name)`` reads back, by file name: ``<name>.key.pem`` (a secret:
        write it 0600), ``<name>.crt.pem`` and ``ca.crt.pem``."""
        return {f"{name}.key.pem": self.key_pem, f"{name}.crt.pem": self.cert_pem, "ca.crt.pem": self.ca_pem}

    @classmethod
    def load(cls, directory: Path, name: str) -> "TLSIdentity | None":
        """The identity saved under ``name`` in ``directory``; None when there is none."""
        try:
            return cls((directory / f"{name}.crt.pem").read_bytes(), (directory / f"{name}.key.pem").read_bytes(),
                       (directory / "ca.crt.pem").read_bytes())
        except FileNotFoundError:
            return None


def client_identity(home_root: Path) -> TLSIdentity | None:
    """The TLS identity clients acting from this home use (None: the home's node speaks plain TCP)."""
    return TLSIdentity.load(Path(home_root) / "tls", "client")
