"""The chaos run's history: every operation, as the linearizability checker reads it."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

from testkit.linearizability import Operation, op_record


class History:
    """Every operation, streamed to a JSON-lines file as it completes (a killed run keeps a valid prefix)."""

    def __init__(self, path: Path, t0: float) -> None:
        self.path = path
        self.t0 = t0
        self.lock = threading.Lock()
        self.ops: list[tuple[Operation, str]] = []  # (operation, "ok" | "fail" | "unknown")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.out = open(path, "w")

    def record(self, client, f: str, key: str, value, call: float, ret: float, output, typ: str,
               error: str | None = None) -> None:
        op = Operation(client, call - self.t0, math.inf if typ == "unknown" else ret - self.t0, (f, key, value),
                       None if typ == "unknown" else output)
        extra = {"type": typ}
        if typ == "unknown":
            extra["returned"] = round(ret - self.t0, 6)  # when the caller gave up (ret stays null: unknown)
        if error:
            extra["error"] = error
        line = json.dumps(op_record(op, **extra))
        with self.lock:
            self.ops.append((op, typ))
            self.out.write(line + "\n")

    def count(self) -> int:
        with self.lock:
            return len(self.ops)

    def close(self) -> None:
        with self.lock:
            self.out.close()
