"""The node's lease ids (``hosting.lessor``), made and read here only.

  * ``netlet:<netlet id>`` — a netlet's liveness lease (``hosting.supervisor``), renewed by its
    heartbeat;
  * ``control:<app>`` — the app's control lease (``hosting.control``), held by its master.

Contracts: ``parse(netlet(n)) == ("netlet", n)`` and ``parse(control(a)) == ("control", a)``
for every netlet id ``n`` and app ``a`` the grammar accepts (``warrants.names``); anything
else is BadInput, so a lease the node never made is never mistaken for one of its kinds.
"""

from __future__ import annotations

from warrants import names
from warrants.errors import BadInput

NETLET = "netlet"
CONTROL = "control"


def netlet(netlet_id: str) -> str:
    return f"{NETLET}:{names.NetletId.parse(netlet_id)}"


def control(app: str) -> str:
    return f"{CONTROL}:{names.check_app(app)}"


def parse(lease_id) -> tuple[str, str]:
    """``(kind, subject)``: ``("netlet", netlet id)`` or ``("control", app)``; BadInput otherwise."""
    kind, sep, subject = lease_id.partition(":") if isinstance(lease_id, str) else ("", "", "")
    if sep and kind == NETLET:
        return kind, str(names.NetletId.parse(subject))
    if sep and kind == CONTROL:
        return kind, names.check_app(subject)
    raise BadInput(f"bad lease id {str(lease_id)[:120]!r}: expected netlet:<netlet id> or control:<app>")
