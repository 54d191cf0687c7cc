"""A small, typed view of etcd v3 for the cluster backends (over etcd3gw).

etcd3gw speaks etcd's gRPC-gateway (JSON over HTTP(S)), so the cluster needs no
grpcio/protobuf build; it is maintained by OpenStack (tooz, oslo). This module
adds what the backends need and etcd3gw leaves raw: compare-and-swap
transactions on revisions, typed results, and a watch that resumes after a
dropped stream without losing or repeating an event.

Contracts:
  * Keys are strings under one ``prefix`` (``/jtrix/<cluster>/``); callers pass
    the part after it.
  * ``create`` succeeds only if the key does not exist; ``swap`` only if the
    key's ``mod_revision`` is still the one the caller read (0: absent). Both
    are single etcd transactions: linearizable, whatever other nodes do.
  * ``watch_prefix`` calls ``on_event`` for every change after
    ``start_revision``, in revision order, exactly once, across reconnects —
    unless etcd compacted past it, where it raises :class:`Compacted` in the
    watch thread's ``on_error``.
  * Every network failure surfaces as :class:`EtcdUnavailable` (whose fault:
    the cluster's, not the caller's).
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import etcd3gw
import requests
from etcd3gw import exceptions as etcd_errors

from warrants.errors import JtrixError

log = logging.getLogger(__name__)


def _encode(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _decode(data: str) -> bytes:
    return base64.b64decode(data)


def _range_end(prefix: str) -> str:
    """The etcd ``range_end`` covering every key that starts with ``prefix`` (encoded)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1  # prefixes end in "/", never in 0xff
    return base64.b64encode(bytes(raw)).decode()


DEFAULT_PREFIX = "/jtrix/default/"


class EtcdUnavailable(JtrixError):
    """etcd did not answer (down, partitioned, or too slow)."""


class Compacted(JtrixError):
    """A watch asked for revisions etcd has already compacted away."""


@dataclass(frozen=True)
class KeyValue:
    key: str  # without the prefix
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int

    def json(self) -> Any:
        return json.loads(self.value)


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "put" or "delete"
    key: str
    value: bytes  # b"" for deletes
    revision: int


@dataclass(frozen=True)
class TLSFiles:
    """Client TLS for etcd (PEM files): the CA that signed etcd's certificate (None: the
    system's CAs), and this node's client certificate and key (None: no client certificate)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def requests_options(self) -> dict[str, Any]:
        """``verify`` and ``cert`` for a requests session."""
        options: dict[str, Any] = {"verify": self.ca or True}
        if self.cert and self.key:
            options["cert"] = (self.cert, self.key)
        return options


class Etcd:
    """One etcd endpoint, one key prefix. Thread-safe (a requests session per thread)."""

    def __init__(self, url: str, prefix: str | None = None, timeout: float = 5.0,
                 tls: TLSFiles | None = None) -> None:
        """``url``: ``http(s)://HOST:PORT[/PREFIX]``; the key prefix is ``prefix`` if given,
        else the URL's path, else ``/jtrix/default/``."""
        parsed = urllib.parse.urlsplit(url)
        try:
            port = parsed.port
        except ValueError:
            port = None
        if parsed.scheme not in ("http", "https") or not parsed.hostname or not port:
            raise ValueError(f"etcd URL must look like http://HOST:PORT[/PREFIX], not {url!r}")
        if prefix is None:
            prefix = parsed.path.rstrip("/") + "/" if parsed.path.strip("/") else DEFAULT_PREFIX
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError(f"etcd prefix must start and end with '/', not {prefix!r}")
        self.url = f"{parsed.scheme}://{parsed.netloc}"
        self.prefix, self.timeout, self.tls = prefix, timeout, tls
        self._scheme, self._host, self._port = parsed.scheme, parsed.hostname, port
        self._local = threading.local()

    # -- plumbing -----------------------------------------------------------
    def _client(self) -> etcd3gw.Etcd3Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = etcd3gw.Etcd3Client(host=self._host, port=self._port, protocol=self._scheme,
                                         timeout=self.timeout, api_path="/v3/", session=requests.Session())
            self._local.client = client
        return client

    def request_options(self) -> dict[str, Any]:
        """TLS options passed with every request: set on the session, requests would let
        ``REQUESTS_CA_BUNDLE`` in the environment override the CA."""
        return self.tls.requests_options() if self.tls is not None else {}

    def _post(self, path: str, body: dict) -> dict:
        client = self._client()
        try:
            return client.post(client.get_url(path), json=body, **self.request_options())
        except (etcd_errors.ConnectionFailedError, etcd_errors.ConnectionTimeoutError) as err:
            raise EtcdUnavailable(f"etcd at {self.url} did not answer: {err}") from None
        except etcd_errors.Etcd3Exception as err:
            raise EtcdUnavailable(f"etcd at {self.url} refused {path}: {err.detail_text or err}") from None

    def _key(self, key: str) -> str:
        return _encode(self.prefix + key)

    def _kv(self, raw: dict) -> KeyValue:
        return KeyValue(_decode(raw["key"]).decode()[len(self.prefix):], _decode(raw.get("value", "")),
                        int(raw.get("mod_revision", 0)), int(raw.get("create_revision", 0)),
                        int(raw.get("lease", 0)))

    # -- keys -----------------------------------------------------------------
    def get(self, key: str) -> KeyValue | None:
        kvs = self._post("/kv/range", {"key": self._key(key)}).get("kvs", [])
        return self._kv(kvs[0]) if kvs else None

    def get_prefix(self, key_prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``key_prefix`` (sorted) and the store revision they were read at."""
        full = self.prefix + key_prefix
        out = self._post("/kv/range", {"key": _encode(full), "range_end": _range_end(full)})
        return [self._kv(kv) for kv in out.get("kvs", [])], int(out["header"]["revision"])

    def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        """Unconditional write; returns the new revision."""
        body = {"key": self._key(key), "value": _encode(value)}
        if lease:
            body["lease"] = lease
        return int(self._post("/kv/put", body)["header"]["revision"])

    def delete(self, key: str) -> bool:
        return int(self._post("/kv/deleterange", {"key": self._key(key)}).get("deleted", 0)) > 0

    def delete_range(self, start: str, end: str) -> int:
        """Delete every key in [``start``, ``end``); returns how many were deleted."""
        body = {"key": self._key(start), "range_end": self._key(end)}
        return int(self._post("/kv/deleterange", body).get("deleted", 0))

    def last_under(self, key_prefix: str) -> KeyValue | None:
        """The greatest key under ``key_prefix`` (byte order), or None."""
        full = self.prefix + key_prefix
        kvs = self._post("/kv/range", {"key": _encode(full), "range_end": _range_end(full), "limit": 1,
                                       "sort_order": "DESCEND", "sort_target": "KEY"}).get("kvs", [])
        return self._kv(kvs[0]) if kvs else None

    def changed_since(self, key_prefix: str, revision: int, limit: int) -> tuple[list[KeyValue], int]:
        """Up to ``limit`` keys under ``key_prefix`` last written after ``revision``, oldest write
        first, and the store revision they were read at."""
        full = self.prefix + key_prefix
        out = self._post("/kv/range", {"key": _encode(full), "range_end": _range_end(full), "limit": limit,
                                       "min_mod_revision": revision + 1, "sort_order": "ASCEND",
                                       "sort_target": "MOD"})
        return [self._kv(kv) for kv in out.get("kvs", [])], int(out["header"]["revision"])

    def swap(self, key: str, value: bytes | str, mod_revision: int, lease: int = 0,
             held: tuple[str, int] | None = None) -> int | None:
        """Write ``value`` only if the key's mod_revision is ``mod_revision`` (0: absent) — and,
        with ``held=(other_key, lease_id)``, only while ``other_key`` exists under that lease.

        Returns the new revision, or None if a condition failed.
        """
        put: dict[str, Any] = {"key": self._key(key), "value": _encode(value)}
        if lease:
            put["lease"] = lease
        if mod_revision == 0:
            compare = {"key": self._key(key), "target": "CREATE", "result": "EQUAL", "create_revision": 0}
        else:
            compare = {"key": self._key(key), "target": "MOD", "result": "EQUAL", "mod_revision": mod_revision}
        compares = [compare]
        if held is not None:
            compares.append({"key": self._key(held[0]), "target": "LEASE", "result": "EQUAL", "lease": held[1]})
        out = self._post("/kv/txn", {"compare": compares, "success": [{"request_put": put}]})
        return int(out["header"]["revision"]) if out.get("succeeded") else None

    def create(self, key: str, value: bytes | str, lease: int = 0) -> int | None:
        """Write only if the key does not exist; the new revision, or None."""
        return self.swap(key, value, 0, lease)

    def delete_if(self, key: str, mod_revision: int) -> bool:
        """Delete only if the key's mod_revision is still ``mod_revision``."""
        compare = {"key": self._key(key), "target": "MOD", "result": "EQUAL", "mod_revision": mod_revision}
        out = self._post("/kv/txn", {"compare": [compare],
                                     "success": [{"request_delete_range": {"key": self._key(key)}}]})
        return bool(out.get("succeeded"))

    # -- leases -----------------------------------------------------------------
    def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease of ``ttl`` whole seconds (etcd's unit); returns ``(id, ttl granted)``.

        etcd raises a ttl below its minimum (1.5 election timeouts, 2 s by default).
        """
        if ttl < 1:
            raise ValueError("etcd lease ttl must be at least 1 s")
        out = self._post("/lease/grant", {"TTL": int(ttl)})
        return int(out["ID"]), int(out["TTL"])

    def keepalive(self, lease: int) -> int:
        """Renew ``lease``; returns its ttl, or -1 if it has already expired (its keys are gone)."""
        out = self._post("/lease/keepalive", {"ID": lease})
        return int(out.get("result", {}).get("TTL", -1))

    def time_to_live(self, lease: int) -> int:
        """Seconds left on ``lease`` (-1 if it has expired or never existed)."""
        return int(self._post("/kv/lease/timetolive", {"ID": lease}).get("TTL", -1))

    def revoke(self, lease: int) -> None:
        """End ``lease`` now, deleting its keys (an unknown lease is not an error)."""
        try:
            self._post("/kv/lease/revoke", {"ID": lease})
        except EtcdUnavailable as err:
            if "not found" not in str(err):
                raise

    # -- watch ------------------------------------------------------------------
    def watch_prefix(self, key_prefix: str, start_revision: int, on_event: Callable[[WatchEvent], None],
                     on_error: Callable[[Exception], None] | None = None) -> "Watch":
        """Call ``on_event`` for every change under ``key_prefix`` from ``start_revision`` on."""
        return Watch(self, key_prefix, start_revision, on_event, on_error)


class Watch:
    """A watch thread that reconnects at the next unseen revision until ``cancel()``."""

    RECONNECT_S = 0.2

    def __init__(self, etcd: Etcd, key_prefix: str, start_revision: int,
                 on_event: Callable[[WatchEvent], None], on_error: Callable[[Exception], None] | None) -> None:
        self._etcd, self._prefix, self._next = etcd, etcd.prefix + key_prefix, start_revision
        self._on_event, self._on_error = on_event, on_error
        self._stopped = threading.Event()
        self._response: requests.Response | None = None
        self.connects = 0  # streams opened (1 + reconnects)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"etcd-watch-{key_prefix}")
        self._thread.start()

    def cancel(self) -> None:
        self._stopped.set()
        self.drop_stream()
        self._thread.join(timeout=2)

    def drop_stream(self) -> None:
        """Cut the current stream under the reader (it resumes unless cancelled).

        A shutdown of the socket, not ``response.close()``: closing blocks on the
        reader's buffer lock until etcd sends something.
        """
        response = self._response
        connection = getattr(response.raw, "connection", None) if response is not None else None
        sock = getattr(connection, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _run(self) -> None:
        session = requests.Session()
        url = f"{self._etcd.url}/v3/watch"
        while not self._stopped.is_set():
            request = {"create_request": {"key": _encode(self._prefix), "start_revision": self._next,
                                          "range_end": _range_end(self._prefix)}}
            try:
                self._response = session.post(url, json=request, stream=True, timeout=(self._etcd.timeout, None),
                                              **self._etcd.request_options())
                self.connects += 1
                floor = self._next  # a transaction's events share one revision: skip only older ones
                for result in self._results(self._response):
                    self._deliver(result, floor)
            except Compacted as err:
                if self._on_error:
                    self._on_error(err)
                return
            except Exception as err:  # noqa: BLE001 -- dropped stream: resume at the next revision
                if self._stopped.is_set():
                    return
                log.debug("etcd watch of %s dropped (%s); resuming at %d", self._prefix, err, self._next)
            self._stopped.wait(self.RECONNECT_S)

    @staticmethod
    def _results(response: requests.Response) -> Iterator[dict]:
        for line in response.iter_lines(chunk_size=None):
            if line.strip():
                yield json.loads(line)["result"]

    def _deliver(self, result: dict, floor: int) -> None:
        if int(result.get("compact_revision", 0)) > 0:
            raise Compacted(f"etcd compacted {self._prefix} past revision {self._next}")
        for raw in result.get("events", []):
            kv = raw["kv"]
            revision = int(kv["mod_revision"])
            if revision < floor:
                continue
            self._next = revision + 1
            event = WatchEvent("delete" if raw.get("type") == "DELETE" else "put",
                               _decode(kv["key"]).decode()[len(self._etcd.prefix):],
                               _decode(kv.get("value", "")), revision)
            if not self._stopped.is_set():
                self._on_event(event)
