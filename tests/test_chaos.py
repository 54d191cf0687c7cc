"""The chaos harness end to end: bench/chaos.py, run as a user runs it.

60 s of load with every fault kind injected at least once (``--schedule all``
cycles through them: SIGKILL of the master, of a backup, SIGSTOP of the master,
SIGKILL + restart of the hosting node, SIGKILL of every replica); the harness
must exit 0 with nothing lost, no epoch with two masters and a linearizable
history. Select it alone with ``-m chaos``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from nodeutil import kill_recorded, processes_under

ROOT = Path(__file__).resolve().parent.parent
CHAOS = ROOT / "bench" / "chaos.py"
RUN_S = 60


def _kill_leftovers(home: Path) -> list[int]:
    """Whatever still runs from the harness's home (it cleans up itself; this must find nothing)."""
    from hosting.daemon import is_node_process

    left = [p for p in processes_under(home)]
    left += [p for p in psutil.process_iter() if is_node_process(p.pid, home)]
    victims = [kill_recorded(p.pid, p.create_time()) for p in left if p.is_running()]
    psutil.wait_procs([v for v in victims if v is not None], timeout=10)
    return [p.pid for p in left]


@pytest.mark.chaos
@pytest.mark.timeout(RUN_S + 540)
def test_chaos_every_fault_kind_nothing_lost_no_double_master_linearizable(tmp_path):
    work = tmp_path / "work"
    history, summary_path = tmp_path / "history.jsonl", tmp_path / "summary.json"
    cmd = [sys.executable, str(CHAOS), "--duration", str(RUN_S), "--clients", "6", "--seed", "7",
           "--schedule", "all", "--fault-interval", "2", "--history", str(history), "--json", str(summary_path),
           "--workdir", str(work), "--check-timeout", "240"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        out, _ = proc.communicate(timeout=RUN_S + 420)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the harness cleans up on SIGTERM
        try:
            out, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        pytest.fail(f"bench/chaos.py did not finish in time:\n{out[-5000:]}")
    finally:
        leftovers = _kill_leftovers(work / "home")
    print(out[-6000:])  # the harness's fault log and summary block (pytest -s / -rP shows it)
    assert leftovers == [], f"bench/chaos.py left processes running: {leftovers}"
    assert summary_path.is_file(), out[-5000:]
    summary = json.loads(summary_path.read_text())
    detail = f"\n{out[-5000:]}\n(history {history}, summary {summary_path}, home {work / 'home'})"
    assert summary["lost"] == 0, detail
    assert summary["duplicates"] == 0, detail
    assert summary["phantoms"] == 0, detail
    assert summary["double_master_epochs"] == 0, detail
    assert summary["masters"]["epoch_regressions"] == [], detail
    assert summary["linearizable"] == "ok", detail
    kinds = summary["faults"]["by_kind"]
    assert set(kinds) == {"kill-master", "kill-backup", "pause-master", "kill-node", "kill-all"}, detail
    assert all(k["healed"] == k["injected"] for k in kinds.values()), detail
    assert summary["operations"]["total"] > 1000, detail
    assert summary["appends_checked"] > 100, detail
    assert proc.returncode == 0, detail
    assert "RESULT                     PASS" in out, detail
