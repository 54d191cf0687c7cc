"""Which replicas a warm start may choose from: only storage that can prove what it holds.

Rule (finding 7 of issue 13): a replica's storage carries an identity whose
``fresh`` flag says it was created empty by the current process (a wiped,
replaced or never-written directory). Such a replica proves nothing about the
writes acknowledged before, so a warm start leaves it out; and it elects
nobody unless at least one member of the stored in-sync set answered with
storage that is not fresh -- every acknowledged write is on every in-sync
member, so only such a member (or a log at least as new, which the best
position picks) is known to hold them all. Pure data in, data out.
"""

from __future__ import annotations

from typing import Collection, Mapping


def unproven(promises: Mapping[str, dict]) -> set[str]:
    """Slots whose promise reports fresh storage."""
    return {slot for slot, p in promises.items() if (p.get("storage") or {}).get("fresh")}


def warm_refusal(promises: Mapping[str, dict], isr: Collection[str]) -> str | None:
    """Why a warm start must not elect from ``promises`` (None: it may, without the unproven)."""
    if not isr:
        return None
    fresh = unproven(promises)
    if any(slot in promises and slot not in fresh for slot in isr):
        return None
    return (f"no in-sync replica ({', '.join(sorted(isr))}) has storage that survived: "
            f"fresh storage in {', '.join(sorted(fresh & set(isr))) or 'none'}; the newest "
            "acknowledged writes cannot be proven present anywhere")
