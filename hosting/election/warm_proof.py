"""Which replicas a warm start may choose from: only storage that can prove what it holds.

Rule (finding 7 of issue 13 and its follow-ups). Every acknowledged write is
on every member of the in-sync set at the last grant, holder included: the
*trusted* set, each member named with the netlet id of the process that was
in it (the holder: the process granted the epoch). The arbiter records it
when ``begin_election`` revokes the holder and keeps it until the next grant
(``AppState.trusted``), so it survives failed attempts, node restarts and
owner changes. A warm start may elect only if some trusted slot *proves* it
still has that storage: its promise reports storage that

* is durable (a generation; memory durability keeps nothing across a warm
  start by definition, and promises nothing to prove: see ``volatile``),
* is not *unproven* (created empty -- a new, wiped or identity-less directory
  -- and not caught up since: ``netlets.replication.storage``), and
* was opened by the trusted process (its netlet id is among the storage's
  ``openers``): a directory wiped and re-created since, even if a later
  process has written into it, was not; an unknown trusted process proves
  nothing.

Then the best position among the answering replicas, unproven ones left out,
holds everything that one holds.

One unproven storage vouches all the same: that of a *grant never used*
(``unused_grant``). When the trusted set is the holder alone (its in-sync set
at the grant was only itself, as at every cold start) and the holder's trusted
process answers with the storage it opened, still unproven, that process never
became master (``become_master`` proves the storage before the replica acts as
one): it acknowledged nothing, and as the in-sync set's only member it holds,
in that same storage, whatever was acknowledged before its grant. (So a first
promotion that never took effect does not block the app for good.) When no trusted set is recorded at all (an
app never elected, state from before the record existed), any unproven
answering storage refuses the warm start: each in-sync member's storage is
then either proven, and the best position holds what it holds, or it refuses.
Pure data in, data out.
"""

from __future__ import annotations

from typing import Mapping


def trusted_set(isr, holder: str | None, granted: str | None,
                incarnations: Mapping[str, str]) -> dict[str, str | None] | None:
    """slot → netlet id of the process trusted in it (None: unknown), from the arbiter's state
    while a holder is recorded; None when there is no holder."""
    if holder is None:
        return None
    trusted = {slot: incarnations.get(slot) for slot in isr if slot != holder}
    trusted[holder] = granted
    return trusted


def _storage(promise: dict | None) -> dict:
    return (promise or {}).get("storage") or {}


def volatile(promises: Mapping[str, dict]) -> bool:
    """Every answer reports storage that keeps nothing across processes (durability memory)."""
    return bool(promises) and all(_storage(p).get("generation") is None for p in promises.values())


def unused_grant(promises: Mapping[str, dict], trusted: Mapping[str, str | None] | None) -> set[str]:
    """The lone trusted slot whose trusted process answers with the storage it opened, durable and
    still unproven: its grant was never used (module docstring), so that storage vouches."""
    if not trusted or len(trusted) != 1:
        return set()
    ((slot, netlet),) = trusted.items()
    promise = promises.get(slot)
    storage = _storage(promise)
    used = (promise is None or netlet is None or storage.get("generation") is None
            or storage.get("unproven") is not True or netlet not in (storage.get("openers") or ()))
    return set() if used else {slot}


def unproven(promises: Mapping[str, dict], trusted: Mapping[str, str | None] | None = None) -> set[str]:
    """Slots whose promise cannot vouch for its storage: unproven (unless it is an unused grant's,
    given ``trusted``), or with no identity at all (an answer without one, from durable storage,
    proves nothing either)."""
    if volatile(promises):
        return set()
    return {slot for slot, p in promises.items()
            if _storage(p).get("unproven", True) or _storage(p).get("generation") is None} - unused_grant(
                promises, trusted)


def _proves(promise: dict | None, netlet: str | None) -> bool:
    storage = _storage(promise)
    return (promise is not None and netlet is not None and storage.get("generation") is not None
            and storage.get("unproven") is False and netlet in (storage.get("openers") or ()))


def warm_refusal(promises: Mapping[str, dict], trusted: Mapping[str, str | None] | None) -> str | None:
    """Why a warm start must not elect from ``promises`` (None: it may, leaving out ``unproven``)."""
    if volatile(promises):
        return None
    if trusted is None:
        bad = unproven(promises)
        if not bad:
            return None
        return (f"storage of {', '.join(sorted(bad))} is unproven (wiped, lost or not caught up since) and "
                "the in-sync set of the last master is not known: the newest acknowledged writes cannot be "
                "proven present")
    if any(_proves(promises.get(slot), netlet) for slot, netlet in trusted.items()) or unused_grant(promises, trusted):
        return None
    return (f"no replica of the last in-sync set ({', '.join(sorted(trusted))}) answered with the proven "
            "storage its trusted process had (wiped, lost or replaced since): the newest acknowledged writes "
            "cannot be proven present")
