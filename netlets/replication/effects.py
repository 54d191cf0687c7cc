"""What the replication core asks its runner to do (it does no I/O itself).

The core appends these to ``Replica.effects``; the runner drains them with
``Replica.take_effects()`` after every call (under the same lock) and acts:

* :class:`Send` — deliver ``msg`` to backup ``to`` through that backup's single
  in-order sender; hand the reply to ``Replica.on_reply`` (or, when the RPC
  fails or times out, call ``Replica.on_send_failed(to)``).
* :class:`Complete` — release the caller waiting on ``token`` with ``outcome``.
* :class:`ArbiterRequest` — ask the hosting node's arbiter to ``shrink`` or
  ``expand`` the in-sync set (or, ``sync``, for its current version); hand the
  answer to ``Replica.on_arbiter_reply(request, answer)``, or call
  ``Replica.on_arbiter_failed(request)`` when none came. Any number may be in
  flight at the runner (late, lost, duplicated): the core acts only on the
  answer to the one request it is waiting for.
* :class:`MasterFenced` — this replica learned of a higher epoch while master: it
  will commit nothing more; the runner should step down (exit; the node
  restarts the slot as a backup).
* :class:`RoleChanged` — call the netlet hook (``on_master``/``on_backup``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Send:
    to: str
    msg: dict
    generation: int = 0  # the peer channel's reset point: a later generation supersedes this message


@dataclass(frozen=True)
class Complete:
    token: int
    outcome: dict


@dataclass(frozen=True)
class ArbiterRequest:
    kind: str  # "shrink" | "expand" | "sync" (only learn the current version and set)
    epoch: int
    slot: str | None  # None for "sync"
    incarnation: str | None = None  # expand: the peer process whose acks were counted
    version: int | None = None  # the ISR version the change was computed from (None: "sync")
    seq: int = 0  # this master's request number: an answer is matched to the request by equality


@dataclass(frozen=True)
class MasterFenced:
    epoch: int  # the higher epoch that fenced us


@dataclass(frozen=True)
class RoleChanged:
    role: str  # "master" | "backup"
    epoch: int
    master_slot: str | None
