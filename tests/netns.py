"""Hosts on one machine, each in a network namespace of its own, linked by a bridge.

``NetnsLab(n)`` makes a bridge in the root namespace (its address ``gateway``)
and ``n`` namespaces, each with a veth link to the bridge and an address of its
own (``address(i)``, i from 1). ``cut(i)`` takes host i's link down — it can
reach nothing but itself — and ``heal(i)`` brings it back. ``close()`` removes
everything it made (deleting a namespace deletes its veth pair). Needs root and
iproute2; ``available()`` says whether this machine allows it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess


def available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"jxp{secrets.token_hex(3)}"
    ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ok


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class NetnsLab:
    def __init__(self, hosts: int) -> None:
        self.tag = secrets.token_hex(2)
        self.subnet = f"10.{100 + secrets.randbelow(100)}.{secrets.randbelow(250)}"
        self.bridge = f"jxb{self.tag}"
        self.gateway = f"{self.subnet}.1"
        self.hosts = hosts
        self.made: list[str] = []
        try:
            _ip("link", "add", "name", self.bridge, "type", "bridge")
            self.made.append("bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(1, hosts + 1):
                ns, host_end, ns_end = self.namespace(i), f"jxh{self.tag}{i}", f"jxn{self.tag}{i}"
                _ip("netns", "add", ns)
                self.made.append(ns)
                _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
                _ip("link", "set", ns_end, "netns", ns)
                _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", ns_end)
                _ip("-n", ns, "link", "set", ns_end, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("link", "set", host_end, "master", self.bridge)
                _ip("link", "set", host_end, "up")
        except BaseException:
            self.close()
            raise

    def namespace(self, i: int) -> str:
        return f"jxn{self.tag}{i}"

    def address(self, i: int) -> str:
        return f"{self.subnet}.{10 + i}"

    def prefix(self, i: int) -> list[str]:
        """Run a command in host i: ``[*lab.prefix(i), "python", ...]``."""
        return ["ip", "netns", "exec", self.namespace(i)]

    def cut(self, i: int) -> None:
        _ip("link", "set", f"jxh{self.tag}{i}", "down")

    def heal(self, i: int) -> None:
        _ip("link", "set", f"jxh{self.tag}{i}", "up")

    def close(self) -> None:
        """Remove the links (a namespace outlives its name while a process is still in it, and
        its veth pair with it), the namespaces and the bridge."""
        for i in range(1, self.hosts + 1):
            subprocess.run(["ip", "link", "del", f"jxh{self.tag}{i}"], capture_output=True)
        for thing in reversed(self.made):
            if thing == "bridge":
                subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
            else:
                subprocess.run(["ip", "netns", "del", thing], capture_output=True)
        self.made = []
