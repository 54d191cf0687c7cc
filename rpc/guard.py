"""What a peer may send to a jtrix endpoint, decided from a message's header before its body is read.

Contracts (what must hold for every message a ``wire.Daemon`` serves):
  * Nothing is decompressed: a message flagged compressed is refused from its
    header (jtrix never compresses; Pyro5 would inflate it unbounded, before
    any authentication).
  * Nothing is buffered beyond its limit, nor ahead of what arrived: a
    message's declared size is checked against the limit of what it is (the
    first message of a connection: ``MessageLimits.first``, a few KB, before
    anyone is authenticated; a call: the limit of the method it names, read
    from the first bytes of the body) before the body is read, and the body's
    buffer grows as its bytes arrive, at most ``CHUNK`` ahead of them, each
    step taken first from the message's ``charge`` (``rpc.budget``: an
    endpoint-wide budget for unproven peers; refused beyond it). A declared
    size costs nothing until it is sent. An endpoint may hold a connection to
    the limits of what its peer proved it is (``wire.Daemon.limits_for``: a
    netlet's clients never get a replica's).
  * Only msgpack is deserialized (the serializer id of every message that
    carries data is msgpack's); annotations are capped at ``ANNOTATIONS_MAX``.
  * Every call is answered by the worker that serves its connection: a message
    flagged oneway or batch (``REFUSED_FLAGS``) is refused from its header
    (jtrix makes neither; Pyro5 would start an unpooled thread per oneway call,
    and run a batch's calls unbounded in one message).
  * Time is bounded in total, not per read: the first message (TLS handshake
    included, see ``wire.Daemon``) must be complete by its deadline; a later
    message may start after an idle wait but, once its first byte arrives,
    must be complete within ``HEADER_S`` plus its size at ``MIN_RATE``.
    A peer that drips a byte every few seconds gains nothing.

A refused message is the peer's fault (``MessageRefused``); the connection is
closed after the refusal is answered (the rest of the message is never read).
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass, field
from typing import Mapping

import msgpack
from Pyro5 import errors, protocol

from warrants.errors import BadInput

MSGPACK_ID = 4  # Pyro5's serializer id of msgpack (serializers.MsgpackSerializer.serializer_id)
HEADER_SIZE = protocol._header_size  # 40 bytes, fixed by the wire protocol
ANNOTATIONS_MAX = 1024
#: how far a body's buffer may run ahead of the bytes that arrived
CHUNK = 64 * 1024
#: bytes of a call's body read to learn its object and method (both short names)
METHOD_PREFIX = 256
#: the first message of a connection (Pyro5's connect request with its handshake data)
FIRST_MESSAGE_MAX = 8 * 1024
#: how long a peer has for its first message, from accept, TLS handshake included
FIRST_MESSAGE_S = 5.0
#: once a message's first byte arrived: time for the header, plus the body at MIN_RATE
HEADER_S = 5.0
MIN_RATE = 256 * 1024  # bytes/s
#: what no jtrix peer sends: a oneway call (Pyro5 serves each in a new thread) or a batch of calls
REFUSED_FLAGS = protocol.FLAGS_ONEWAY | protocol.FLAGS_BATCH
#: how long a refused call's rest is read and dropped so that its sender sees the refusal
LINGER_S = 1.0


class MessageRefused(BadInput):
    """The peer sent a message this endpoint does not take (too large, compressed, late, malformed)."""

    def __init__(self, reason: str, kind: str = "malformed", seq: int = 0, unread: int = 0) -> None:
        super().__init__(reason)
        # kind: a metric label; seq: to answer the refused message; unread: bytes of it not read
        self.kind, self.seq, self.unread = kind, seq, unread


@dataclass(frozen=True)
class MessageLimits:
    """Largest message body (data + annotations) an endpoint takes, by what the message is."""

    default: int
    methods: Mapping[str, int] = field(default_factory=dict)
    first: int = FIRST_MESSAGE_MAX
    #: how many times its size a body may cost deserialized (``rpc.cost``); None: not checked
    expansion: int | None = None
    #: the most items one array or map of a call may hold (None: as many as its size allows)
    max_items: int | None = None

    def for_method(self, method: str) -> int:
        return self.methods.get(method, self.default)

    @property
    def largest(self) -> int:
        return max([self.default, self.first, *self.methods.values()])


def _recv_into(sock: socket.socket, view: memoryview, deadline: float, late: str) -> None:
    """Fill ``view`` from ``sock`` by ``deadline`` (monotonic) or raise ``MessageRefused``."""
    got = 0
    while got < len(view):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MessageRefused(late, "late")
        sock.settimeout(remaining)
        try:
            n = sock.recv_into(view[got:])
        except socket.timeout:
            raise MessageRefused(late, "late") from None
        except OSError as err:
            raise errors.ConnectionClosedError(f"receiving: connection lost: {err}") from None
        if n == 0:
            raise errors.ConnectionClosedError("receiving: connection closed")
        got += n


def _method_of(prefix: bytes) -> str:
    """The method a msgpack-serialized Pyro5 call names, from the first bytes of its body."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(prefix) + 1, max_str_len=METHOD_PREFIX,
                                max_bin_len=0, max_array_len=0, max_map_len=0, max_ext_len=0)
    unpacker.feed(prefix)
    try:
        if unpacker.read_array_header() != 4:
            raise ValueError("not a call")
        obj, method = unpacker.unpack(), unpacker.unpack()
    except (ValueError, msgpack.OutOfData, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as err:
        raise MessageRefused(f"malformed call: {err}") from None
    if not isinstance(obj, str) or not isinstance(method, str):
        raise MessageRefused("malformed call: object and method must be names")
    return method


def read_message(sock: socket.socket, limits: MessageLimits, accepted: tuple[int, ...], *,
                 first: bool, deadline: float, charge=None) -> tuple[bytes, bytearray]:
    """One whole Pyro5 message, (header, payload), from ``sock``, checked against the module contracts.
    Every byte of the body is taken from ``charge`` (a ``rpc.budget.Charge``) before it is held;
    the caller releases the charge once done with the message.

    ``first``: this is the connection's first message and ``deadline`` (monotonic)
    bounds all of it. Otherwise ``deadline`` bounds only the wait for its first
    byte (an idle connection: Pyro5's ``TimeoutError``, not a refusal)."""
    header = bytearray(HEADER_SIZE)
    view = memoryview(header)
    if not first:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            n = sock.recv_into(view[:1])
        except socket.timeout:
            raise errors.TimeoutError("receiving: idle connection timed out") from None
        except OSError as err:
            raise errors.ConnectionClosedError(f"receiving: connection lost: {err}") from None
        if n == 0:
            raise errors.ConnectionClosedError("receiving: connection closed")
        deadline = time.monotonic() + HEADER_S
        view = view[1:]
    late = "first message not complete in time" if first else "message not complete in time"
    _recv_into(sock, view, deadline, late)
    try:
        msg = protocol.ReceivingMessage(bytes(header))
    except errors.ProtocolError:
        if header[:4] != b"PYRO":
            raise MessageRefused("not a Pyro5 message") from None
        raise MessageRefused("unsupported Pyro5 protocol version, or message too large") from None
    size = msg.data_size + msg.annotations_size
    if msg.type not in accepted:
        raise MessageRefused(f"unexpected message type {msg.type}", seq=msg.seq)
    if msg.flags & protocol.FLAGS_COMPRESSED:
        raise MessageRefused("compressed messages are refused", "compressed", msg.seq)
    if msg.flags & REFUSED_FLAGS:
        raise MessageRefused("oneway and batch calls are refused", "flags", msg.seq)
    if msg.type != protocol.MSG_PING and msg.serializer_id != MSGPACK_ID:
        raise MessageRefused("only msgpack is accepted", seq=msg.seq)
    if msg.annotations_size > ANNOTATIONS_MAX:
        raise MessageRefused(f"annotations of {msg.annotations_size} bytes, more than {ANNOTATIONS_MAX}",
                             "too_large", msg.seq)
    # a call's own limit is known once its method is read (below); nothing larger than any is read
    limit = limits.first if first else limits.largest if msg.type == protocol.MSG_INVOKE else limits.default
    if size > limit:
        raise MessageRefused(f"message of {size} bytes, more than the {limit} this endpoint takes"
                             + (" before authentication" if first else ""), "too_large", msg.seq, size)
    if not first:
        deadline += size / MIN_RATE
    head = bytearray(min(size, msg.annotations_size + METHOD_PREFIX))
    _recv_into(sock, memoryview(head), deadline, late)
    if msg.type == protocol.MSG_INVOKE and not first:
        method = _method_of(bytes(head[msg.annotations_size:]))
        allowed = limits.for_method(method)
        if size > allowed:
            raise MessageRefused(f"{method}: message of {size} bytes, more than the {allowed} it takes",
                                 "too_large", msg.seq, size - len(head))
    payload = head  # grows as the body arrives, never larger than its method takes
    try:
        if charge is not None:
            charge.take(len(head))
        while len(payload) < size:
            step = bytearray(min(CHUNK, size - len(payload)))
            if charge is not None:
                charge.take(len(step))
            _recv_into(sock, memoryview(step), deadline, late)
            payload += step
    except MessageRefused as err:
        err.seq, err.unread = msg.seq, size - len(payload)
        raise
    return bytes(header), payload


def discard(sock: socket.socket, unread: int, seconds: float = LINGER_S) -> None:
    """Read and drop up to ``unread`` bytes for at most ``seconds`` (a lingering close): a client
    still sending a refused message can finish and read the refusal instead of a broken pipe.
    Costs a fixed buffer, never the message's size."""
    deadline, scratch = time.monotonic() + seconds, bytearray(64 * 1024)
    with contextlib.suppress(OSError):
        while unread > 0 and (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            n = sock.recv_into(scratch, min(len(scratch), unread))
            if n == 0:
                return
            unread -= n
