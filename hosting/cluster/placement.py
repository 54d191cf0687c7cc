"""Where each slot of an app runs in a cluster: a pure placement policy.

``place(slot_types, nodes, current)`` assigns every slot to a live node.

Contracts (what callers and tests rely on):
  * A slot whose current node is still live stays there: its durable state
    (log, snapshot, resources) lives in that node's slot directory, so moving
    it would only cost a full catch-up.
  * Every other slot goes to the node holding the fewest replicas of its type,
    then the fewest slots overall, then the first by name: deterministic, and
    as even as the kept slots allow.
  * Hence anti-affinity: starting from no placement, or from one this function
    made, replicas of one type are on distinct nodes whenever there are at
    least as many live nodes as replicas of that type.
  * No live node: ValueError (nothing can run).

``rebalance_move(slot_types, nodes, placement, master)`` proposes one slot to
move when a type's replicas are uneven (a node joined after the app was
placed, or after a node came back empty):
  * Only when some node holds at least two more replicas of a type than
    another live node; never the master's slot; the target is the node with
    the fewest replicas of that type, then the fewest slots, then by name.
  * Each move lowers the sum of squares of the per-(type, node) counts, so
    applying moves until there is none terminates, and ends with every type
    as even as it can be (per-node counts differ by at most one).
  * None when there is nothing to improve.

``rebalance_step(replicas, nodes, placement, state, live, moved)`` is the
owner's whole rule: a move only while the app is whole (a master, every
replica live and in the in-sync set, none still catching up after a move),
never of the master's slot (``state.holder``).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping


def place(slot_types: Mapping[str, str], nodes: Iterable[str], current: Mapping[str, str] | None = None
          ) -> dict[str, str]:
    """``slot_types``: slot → netlet type; ``nodes``: live node names; ``current``: slot → node."""
    live = sorted(set(nodes))
    if not live:
        raise ValueError("no live node to place slots on")
    current = current or {}
    placed = {slot: node for slot, node in current.items() if slot in slot_types and node in live}
    per_type: Counter = Counter((slot_types[s], n) for s, n in placed.items())
    per_node: Counter = Counter(placed.values())
    for slot in sorted(s for s in slot_types if s not in placed):
        kind = slot_types[slot]
        node = min(live, key=lambda n: (per_type[kind, n], per_node[n], n))
        placed[slot] = node
        per_type[kind, node] += 1
        per_node[node] += 1
    return placed


def rebalance_step(replicas: Mapping[str, str], nodes: Iterable[str], placement: Mapping[str, str], state,
                   live: Iterable[str], moved: Iterable[str]) -> tuple[str, str] | None:
    """``replicas``: slot → type of the master-eligible slots; ``state``: the app's arbiter state
    (``holder`` slot, ``isr`` slots); ``live``: slots with a published netlet; ``moved``: slots
    not yet caught up after a move."""
    whole = (state.holder is not None and set(replicas) <= set(state.isr) and set(replicas) <= set(live)
             and not set(moved))
    return rebalance_move(replicas, nodes, placement, state.holder) if whole else None


def rebalance_move(slot_types: Mapping[str, str], nodes: Iterable[str], placement: Mapping[str, str],
                   master: str | None) -> tuple[str, str] | None:
    """One (slot, target node) that evens out a type's replicas, or None (module contracts)."""
    live = sorted(set(nodes))
    per_type: Counter = Counter((slot_types[s], n) for s, n in placement.items() if s in slot_types)
    per_node: Counter = Counter(n for s, n in placement.items() if s in slot_types)
    for kind in sorted(set(slot_types.values())):
        target = min(live, key=lambda n: (per_type[kind, n], per_node[n], n))
        for source in sorted(set(placement.values()), key=lambda n: (-per_type[kind, n], n)):
            if per_type[kind, source] - per_type[kind, target] < 2:
                break
            movable = sorted(s for s, n in placement.items()
                             if n == source and slot_types.get(s) == kind and s != master)
            if movable:
                return movable[-1], target
    return None
