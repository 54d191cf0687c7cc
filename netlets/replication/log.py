"""The in-memory replicated log: a tail of entries after a snapshot point.

``base_seq``/``base_epoch`` is the last entry covered by the latest snapshot
(``0``/``0`` at the start of time); ``entries`` hold seqs ``base_seq + 1 ..
last_seq`` contiguously. Entries are ``[seq, epoch, kind, req_id, command]``
lists (see :mod:`.messages`).

Log matching: entries are only ever appended after checking the previous
(seq, epoch), and a (seq, epoch) pair is created by exactly one master, so two
logs holding the same (seq, epoch) agree on every entry up to it.
"""

from __future__ import annotations

from .messages import e_epoch


class Log:
    def __init__(self, base_seq: int = 0, base_epoch: int = 0, entries: list | None = None):
        self.base_seq = base_seq
        self.base_epoch = base_epoch
        self.entries: list = []
        for e in entries or ():
            self.append(e)

    # --- reading ---------------------------------------------------------
    @property
    def last_seq(self) -> int:
        return self.base_seq + len(self.entries)

    @property
    def last_epoch(self) -> int:
        return e_epoch(self.entries[-1]) if self.entries else self.base_epoch

    @property
    def position(self) -> tuple[int, int]:
        """``(epoch of last entry, last seq)``: compare as tuples."""
        return (self.last_epoch, self.last_seq)

    def has(self, seq: int) -> bool:
        """True if the entry at ``seq`` is in memory (not compacted, not beyond)."""
        return self.base_seq < seq <= self.last_seq

    def epoch_at(self, seq: int) -> int | None:
        """Epoch of the entry at ``seq``; the base point counts; None if unknown."""
        if seq == self.base_seq:
            return self.base_epoch
        if self.has(seq):
            return e_epoch(self.entries[seq - self.base_seq - 1])
        return None

    def get(self, seq: int) -> list:
        if not self.has(seq):
            raise IndexError(seq)
        return self.entries[seq - self.base_seq - 1]

    def slice(self, first: int, limit: int) -> list:
        """Up to ``limit`` entries starting at ``first`` (must be > base_seq)."""
        if first <= self.base_seq:
            raise IndexError(first)
        i = first - self.base_seq - 1
        return self.entries[i:i + limit]

    # --- writing ---------------------------------------------------------
    def append(self, e: list) -> None:
        if e[0] != self.last_seq + 1:
            raise ValueError(f"log gap: appending {e[0]} after {self.last_seq}")
        if e_epoch(e) < self.last_epoch:
            raise ValueError("log epochs must not decrease")
        self.entries.append(e)

    def truncate_after(self, seq: int) -> None:
        """Drop every entry after ``seq`` (``seq >= base_seq``)."""
        if seq < self.base_seq:
            raise ValueError("cannot truncate into the snapshot")
        del self.entries[seq - self.base_seq:]

    def compact(self, seq: int, epoch: int) -> None:
        """Forget entries up to ``seq`` (now covered by a snapshot)."""
        if seq <= self.base_seq:
            return
        if seq > self.last_seq:
            self.reset(seq, epoch)
            return
        del self.entries[:seq - self.base_seq]
        self.base_seq, self.base_epoch = seq, epoch

    def reset(self, seq: int, epoch: int) -> None:
        """Empty log starting after the snapshot point ``(seq, epoch)``."""
        self.entries = []
        self.base_seq, self.base_epoch = seq, epoch
