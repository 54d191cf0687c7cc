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
