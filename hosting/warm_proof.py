"""Which replicas a warm start may choose from: only storage that can prove what it holds.

Rule (finding 7 of issue 13). Every acknowledged write is on every member of
the in-sync set at the last grant, holder included: the *trusted* set, each
member named with the storage generation its process had (a replica's
storage identity, reported in its status and in every promise). A warm start
may elect only if some trusted slot answered with that same storage -- not
fresh (created empty by the answering process) and of the recorded
generation: a directory wiped and re-created since, even if a later process
has written into it, proves nothing. The best position among all answering
replicas (fresh ones left out) then holds everything that one holds. The trusted
set must be captured before the first ``begin_election`` since the last grant
(which revokes the holder) and kept across attempts; when it is not known at
all, any fresh storage refuses the warm start. Pure data in, data out.
"""

from __future__ import annotations

from typing import Callable, Mapping


def trusted_set(isr, holder: str | None, granted: str | None, incarnations: Mapping[str, str],
                generation_of: Callable[[str | None], str | None]) -> dict[str, str | None] | None:
    """slot → expected storage generation (None: unknown) for the arbiter's state read *before*
    ``begin_election`` (which drops the holder); None when no holder is recorded.
    ``generation_of(netlet_id)``: the generation that process reported (None if unknown)."""
    if holder is None:
        return None
    trusted = {slot: generation_of(incarnations.get(slot)) for slot in isr if slot != holder}
    trusted[holder] = generation_of(granted)
    return trusted


def unproven(promises: Mapping[str, dict]) -> set[str]:
    """Slots whose promise reports fresh storage."""
    return {slot for slot, p in promises.items() if (p.get("storage") or {}).get("fresh")}


def _proves(promise: dict | None, expected: str | None) -> bool:
    storage = (promise or {}).get("storage") or {}
    if promise is None or storage.get("fresh"):
        return False
    return expected is None or storage.get("generation") in (None, expected)


def warm_refusal(promises: Mapping[str, dict], trusted: Mapping[str, str | None] | None) -> str | None:
    """Why a warm start must not elect from ``promises`` (None: it may, leaving out the unproven)."""
    if trusted is None:
        fresh = unproven(promises)
        if not fresh:
            return None
        return (f"storage of {', '.join(sorted(fresh))} is fresh (wiped or lost) and the in-sync set of "
                "the last master is not known: the newest acknowledged writes cannot be proven present")
    if any(_proves(promises.get(slot), expected) for slot, expected in trusted.items()):
        return None
    return (f"no replica of the last in-sync set ({', '.join(sorted(trusted))}) answered with the storage "
            "it had then (wiped, lost or replaced since): the newest acknowledged writes cannot be proven present")
