"""Restart policy: when to start a slot again after its netlet ended.

Policy (per slot, from the descriptor's ``RestartPolicy``):
  * a run that lasted at least ``healthy_after`` seconds resets the count of
    consecutive failures, so a healthy netlet that crashes is replaced at once;
  * the 1st consecutive failure restarts immediately; the k-th (k >= 2) waits
    a delay drawn uniformly from [d/2, d] with d = min(cap, base * 2**(k-2))
    ("equal jitter": never zero, never above the cap);
  * after ``give_up_after`` consecutive failures (0 = never) the slot gives up.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from warrants.descriptor_model import RestartPolicy


@dataclass(frozen=True)
class Decision:
    failures: int  # consecutive failures including this one
    delay: float | None  # seconds until the next start; None = give up


def next_restart(policy: RestartPolicy, previous_failures: int, run_seconds: float,
                 rng: random.Random | None = None) -> Decision:
    """Decide the restart after a run of ``run_seconds`` ended unrequested."""
    failures = 1 if run_seconds >= policy.healthy_after else previous_failures + 1
    if policy.give_up_after and failures >= policy.give_up_after:
        return Decision(failures, None)
    if failures == 1:
        return Decision(failures, 0.0)
    ceiling = min(policy.backoff_cap, policy.backoff_base * 2 ** (failures - 2))
    delay = (rng or random).uniform(ceiling / 2, ceiling)
    return Decision(failures, delay)
