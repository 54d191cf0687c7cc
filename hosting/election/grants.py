"""Grants: a node's signed word that one replication call is the arbiter's decision.

A netlet's replication surface moves authority (who is master, at which
epoch, replicating to whom), so holding the app's replica credential is not
enough to use it: each such call carries a *grant*, an ECDSA P-256 signature
by a node over ``(app, op, epoch, addressee, digest of the call's arguments)``.

Contracts (what must hold):
  * Only a node can mint a grant a netlet accepts. Alone, the signing key is
    the node's own key (``node.key.pem``) and netlets trust exactly its
    certificate. In a cluster, it is a member node's TLS key and netlets trust
    any certificate the cluster CA issued *with the grant-signer usage*
    (:data:`GRANT_SIGNER`), which only node certificates carry — a netlet's
    own certificate, also from the CA, cannot sign one. Netlets never hold a
    signing key, so netlet code cannot forge a grant.
  * A grant is for one exact call: ``prepare(epoch)``, ``promote(epoch, isr,
    peers)`` or ``peers(epoch, peers)`` to one netlet (its id: slot and
    incarnation, so a new process in the same slot is not the addressee),
    checked against the arguments the netlet received (``rpc.digest``);
    ``promote``/``peers`` grants name the addressee's slot as the master.
  * A master's ``promote`` grant is also its proof to backups: a backup
    accepts appends and snapshots at epoch E only on a connection that
    presented a promote grant for E naming the message's sender, together
    with a signature (:func:`master_proof`) by the *master key* the grant
    names, over the backup's netlet id (its slot *and* incarnation) and the
    handshake's timestamp and nonce. The node makes that key for this one
    promotion and hands its private half only to the promoted netlet (in the
    promote call, never in the grant a backup sees), so a backup that saw the
    grant cannot replay it to another backup; a handshake replayed to the
    backup it was made for fails that process's nonce check, and one replayed
    to the next process of its slot (whose nonce cache is new) is for another
    netlet id (security review B7).
  * Epochs fence grants: no expiry is needed, because a grant for an old epoch
    can only ask for what that epoch's promises already refuse.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rpc.digest import digest
from warrants.errors import BadInput
from warrants.keys import private_key_pem
from warrants.names import NetletId

DOMAIN = b"jtrix-grant/1\0"
PREPARE, PROMOTE, PEERS = "prepare", "promote", "peers"
OPS = (PREPARE, PROMOTE, PEERS)
#: extended key usage of node certificates in a cluster: "may sign grants" (a jtrix-private OID)
GRANT_SIGNER = x509.ObjectIdentifier("1.3.6.1.4.1.57264.7.1")
_ECDSA = ec.ECDSA(hashes.SHA256())
_CACHE_SIZE = 64


class GrantRefused(BadInput):
    """A replication call came without a grant from a node for exactly this call."""


@dataclass(frozen=True)
class Grant:
    """What a verified grant says."""

    app: str
    op: str
    epoch: int
    to: str  # the netlet id it is addressed to
    master: str | None  # the master slot it names (promote, peers: the addressee's); None for prepare
    args: str  # digest of the call's arguments
    master_key: bytes | None = None  # promote: DER public key of the promotion's master key


class GrantSigner:
    """A node's grant-minting key (and, in a cluster, the certificate that vouches for it)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert_pem: bytes | None, trust: dict[str, str]) -> None:
        self._key, self._cert_pem, self._trust = key, cert_pem, trust

    @classmethod
    def for_node(cls, node) -> "GrantSigner":
        if node.tls is not None:
            key = serialization.load_pem_private_key(node.tls.key_pem, password=None)
            return cls(key, node.tls.cert_pem, {"mode": "ca", "cert": node.tls.ca_pem.decode()})
        cert_pem = node.node_cert.public_bytes(serialization.Encoding.PEM)
        return cls(node.node_key, None, {"mode": "self", "cert": cert_pem.decode()})

    def trust(self) -> dict[str, str]:
        """What a netlet needs to verify this node's grants (JSON; in its start document)."""
        return dict(self._trust)

    def mint(self, app: str, op: str, epoch: int, args: list, to: str,
             master_key: bytes | None = None) -> dict[str, Any]:
        """A grant for ``op(*args)`` at ``epoch`` to the netlet ``to`` (with the promotion's
        master public key, DER, for ``promote``)."""
        if op not in OPS:
            raise ValueError(f"unknown grant op {op!r}")
        master = None if op == PREPARE else NetletId.parse(to).slot
        body = json.dumps({"v": 1, "app": app, "op": op, "epoch": int(epoch), "to": to, "master": master,
                           "args": digest(args), "mkey": master_key.hex() if master_key else None},
                          sort_keys=True, separators=(",", ":")).encode()
        return {"body": body, "sig": self._key.sign(DOMAIN + body, _ECDSA), "cert": self._cert_pem}


# The call sites of the node's elector: one grant per replication call, for exactly its arguments.
def for_prepare(by: GrantSigner, app: str, netlet_id: str, epoch: int) -> dict[str, Any]:
    return by.mint(app, PREPARE, epoch, [epoch], netlet_id)


def for_promote(by: GrantSigner, app: str, netlet_id: str, epoch: int, isr: list, peers: dict) -> dict[str, Any]:
    return promote_grant(by, app, netlet_id, epoch, isr, peers)


def for_peers(by: GrantSigner, app: str, netlet_id: str, epoch: int, peers: dict) -> dict[str, Any]:
    return by.mint(app, PEERS, epoch, [epoch, peers], netlet_id)


def promote_grant(by: GrantSigner, app: str, netlet_id: str, epoch: int, isr: list,
                  peers: dict) -> dict[str, Any]:
    """The promote grant, plus (``master_key``, for the promoted netlet only) the private half of
    the promotion's master key; :func:`public` is what the master shows its backups."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return {**by.mint(app, PROMOTE, epoch, [epoch, isr, peers], netlet_id, der),
            "master_key": private_key_pem(key)}


def public(grant: dict[str, Any]) -> dict[str, Any]:
    """``grant`` without the private master key (what may be shown to others)."""
    return {k: v for k, v in grant.items() if k != "master_key"}


def _proof_context(app: str, to_netlet: str, ts: float, nonce: str) -> bytes:
    return f"jtrix-master/2\0{app}\0{to_netlet}\0{ts!r}\0{nonce}".encode()


def master_proof(master_key_pem: bytes, app: str, to_netlet: str, ts: float, nonce: str) -> bytes:
    """The master's signature, for one handshake with the backup process ``to_netlet`` (its netlet id)."""
    key = serialization.load_pem_private_key(master_key_pem, password=None)
    return key.sign(DOMAIN + _proof_context(app, to_netlet, ts, nonce), _ECDSA)


def check_master_proof(grant: Grant, app: str, my_netlet: str, handshake: dict) -> None:
    """``handshake`` (already checked for credential and replay) carries a proof by the master key
    ``grant`` names, made for this receiver (the netlet id ``my_netlet``); raises GrantRefused otherwise."""
    proof, ts, nonce = handshake.get("master_proof"), handshake.get("ts"), handshake.get("nonce")
    if grant.master_key is None or not isinstance(proof, bytes):
        raise GrantRefused("a replication connection proves the grant's master key")
    try:
        key = serialization.load_der_public_key(grant.master_key)
        key.verify(proof, DOMAIN + _proof_context(app, my_netlet, float(ts), str(nonce)), _ECDSA)
    except (InvalidSignature, ValueError, TypeError):
        raise GrantRefused("the replication connection's master proof does not verify") from None


class GrantVerifier:
    """A netlet's check of grants, against the trust its node gave it at start."""

    def __init__(self, trust: dict[str, str]) -> None:
        anchor = x509.load_pem_x509_certificate(trust["cert"].encode())
        if trust["mode"] == "self":
            self._fixed: ec.EllipticCurvePublicKey | None = anchor.public_key()
            self._ca = None
        elif trust["mode"] == "ca":
            self._fixed, self._ca = None, anchor
        else:
            raise ValueError(f"unknown grant trust mode {trust['mode']!r}")
        self._verified: OrderedDict[tuple, Grant] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, grant: Any, app: str) -> Grant:
        """What ``grant`` says, if a trusted node signed it for ``app``; raises GrantRefused."""
        if not isinstance(grant, dict) or not isinstance(grant.get("body"), bytes) \
                or not isinstance(grant.get("sig"), bytes) or not isinstance(grant.get("cert"), (bytes, type(None))):
            raise GrantRefused("replication call refused: it needs a grant signed by a node")
        cache_key = (grant["body"], grant["sig"], grant["cert"])
        with self._lock:
            found = self._verified.get(cache_key)
            if found is not None:
                self._verified.move_to_end(cache_key)
        if found is None:
            key = self._signer_key(grant["cert"])
            try:
                key.verify(grant["sig"], DOMAIN + grant["body"], _ECDSA)
            except (InvalidSignature, ValueError, TypeError):
                raise GrantRefused("replication call refused: the grant's signature does not verify") from None
            found = _parse_body(grant["body"])
            with self._lock:
                self._verified[cache_key] = found
                while len(self._verified) > _CACHE_SIZE:
                    self._verified.popitem(last=False)
        if found.app != app:
            raise GrantRefused(f"replication call refused: the grant is for app {found.app!r}")
        return found

    def check_call(self, grant: Any, app: str, op: str, epoch: int, args: list, to: str) -> Grant:
        """``grant`` is a node's grant for exactly this call (op, epoch, arguments) to netlet ``to``."""
        g = self.verify(grant, app)
        if g.op != op or g.epoch != epoch or g.to != to or g.args != digest(args):
            raise GrantRefused(f"replication call refused: the grant is for another call "
                               f"({g.op} at epoch {g.epoch}), not this {op} at epoch {epoch}")
        return g

    def _signer_key(self, cert_pem: bytes | None) -> ec.EllipticCurvePublicKey:
        if self._fixed is not None:
            return self._fixed
        if cert_pem is None:
            raise GrantRefused("replication call refused: the grant names no signer certificate")
        return _ca_vouched_key(self._ca, cert_pem)


@functools.lru_cache(maxsize=16)
def _ca_vouched_key(ca: x509.Certificate, cert_pem: bytes) -> ec.EllipticCurvePublicKey:
    """The key of ``cert_pem`` if ``ca`` issued it, it is in its validity window (checked
    once per certificate: node certificates are re-issued at every start) and it carries
    the grant-signer usage."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise GrantRefused("replication call refused: the grant's signer is not of this cluster") from None
    now = dt.datetime.now(dt.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise GrantRefused("replication call refused: the grant's signer certificate is not valid now")
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = []
    if GRANT_SIGNER not in usages:
        raise GrantRefused("replication call refused: the grant's signer is not a node")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise GrantRefused("replication call refused: the grant's signer key is not ECDSA")
    return key


def _parse_body(body: bytes) -> Grant:
    try:
        d = json.loads(body)
        return Grant(str(d["app"]), str(d["op"]), int(d["epoch"]), str(d["to"]),
                     None if d["master"] is None else str(d["master"]), str(d["args"]),
                     bytes.fromhex(d["mkey"]) if d.get("mkey") else None)
    except (ValueError, KeyError, TypeError):
        raise GrantRefused("replication call refused: malformed grant") from None
