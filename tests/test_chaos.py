"""The chaos harness end to end: bench/chaos.py, run as a user runs it.

60 s of load with every fault kind injected at least once (``--schedule all``
cycles through them: SIGKILL of the master, of a backup, SIGSTOP of the master,
SIGKILL + restart of the hosting node, SIGKILL of every replica, SIGSTOP of the
hosting daemon while a backup is stopped: late arbiter answers); the harness
must exit 0 with nothing lost, no epoch with two masters and a linearizable
history. Select it alone with ``-m chaos``.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.procs import kill_under

ROOT = Path(__file__).resolve().parent.parent
CHAOS = ROOT / "bench" / "chaos.py"
RUN_S = 60


def _kill_leftovers(work: Path) -> list[int]:
    """Whatever still runs from the harness's work directory — its nodes' homes, its etcd — (it
    cleans up itself; this must find nothing)."""
    return kill_under(work)


def _run_chaos(tmp_path, run_s: int, extra: list[str], kinds: set[str]) -> None:
    """Run bench/chaos.py as a user would and check its verdict and its summary."""
    work = tmp_path / "work"
    history, summary_path = tmp_path / "history.jsonl", tmp_path / "summary.json"
    cmd = [sys.executable, str(CHAOS), "--duration", str(run_s), "--seed", "7", "--schedule", "all",
           "--history", str(history), "--json", str(summary_path), "--workdir", str(work),
           "--check-timeout", "240", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        out, _ = proc.communicate(timeout=run_s + 420)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the harness cleans up on SIGTERM
        try:
            out, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        pytest.fail(f"bench/chaos.py did not finish in time:\n{out[-5000:]}")
    finally:
        leftovers = _kill_leftovers(work)
    print(out[-6000:])  # the harness's fault log and summary block (pytest -s / -rP shows it)
    assert leftovers == [], f"bench/chaos.py left processes running: {leftovers}"
    assert summary_path.is_file(), out[-5000:]
    summary = json.loads(summary_path.read_text())
    detail = f"\n{out[-5000:]}\n(history {history}, summary {summary_path}, work {work})"
    assert summary["lost"] == 0, detail
    assert summary["duplicates"] == 0, detail
    assert summary["phantoms"] == 0, detail
    assert summary["double_master_epochs"] == 0, detail
    assert summary["masters"]["epoch_regressions"] == [], detail
    assert summary["linearizable"] == "ok", detail
    by_kind = summary["faults"]["by_kind"]
    assert set(by_kind) == kinds, detail
    assert all(k["healed"] == k["injected"] for k in by_kind.values()), detail
    assert summary["operations"]["total"] > 1000, detail
    assert summary["appends_checked"] > 100, detail
    assert proc.returncode == 0, detail
    assert "RESULT                     PASS" in out, detail


@pytest.mark.chaos
@pytest.mark.timeout(RUN_S + 540)
def test_chaos_every_fault_kind_nothing_lost_no_double_master_linearizable(tmp_path):
    _run_chaos(tmp_path, RUN_S, ["--clients", "6", "--fault-interval", "2"],
               {"kill-master", "kill-backup", "pause-master", "kill-node", "kill-all", "delay-arbiter"})


@pytest.mark.chaos
@pytest.mark.timeout(RUN_S + 540)
def test_chaos_on_a_three_node_cluster_with_machine_faults(tmp_path):
    """--cluster 3: the same checks with the app spread over three nodes on a private etcd,
    and a node killed with all its netlets and a node paused past its membership lease."""
    if shutil.which("etcd") is None:
        pytest.skip("etcd not installed (scripts/test.sh installs Debian's etcd-server as root)")
    _run_chaos(tmp_path, RUN_S, ["--cluster", "3", "--clients", "4", "--fault-interval", "2"],
               {"kill-master", "kill-backup", "pause-master", "kill-node", "kill-all", "delay-arbiter",
                "kill-machine", "pause-machine"})

# ------------------------------------------- the harness's own checks catch violations

def _chaos_module():
    from testkit.chaos import checks

    return checks


def _op(client, call, ret, f, key, value, out=None):
    from testkit.linearizability import Operation

    return Operation(client, call, ret, (f, key, value), out)


def test_write_checks_find_lost_duplicate_and_phantom_values():
    chaos = _chaos_module()
    inf = float("inf")
    ops = [(_op(0, 0, 1, "append", "log0", "[0.1]", 5), "ok"),
           (_op(1, 0.5, 2, "append", "log0", "[1.1]", 10), "ok"),
           (_op(0, 3, inf, "append", "log0", "[0.2]"), "unknown"),
           (_op(0, 4, 5, "put", "k0", "[0.3]"), "ok"),
           (_op(1, 6, 7, "append", "k0", "[1.2]", 10), "ok")]
    clean = chaos.write_checks(ops, {"log0": "[0.1][1.1]", "k0": "[0.3][1.2]"})
    assert (clean["lost"], clean["duplicates"], clean["phantoms"]) == ([], [], [])
    assert clean["appends_checked"] == 3
    lost = chaos.write_checks(ops, {"log0": "[1.1]", "k0": "[0.3][1.2]"})
    assert [x["token"] for x in lost["lost"]] == ["[0.1]"]
    twice = chaos.write_checks(ops, {"log0": "[0.1][1.1][0.2][0.2]", "k0": "[0.3][1.2]"})
    assert [x["token"] for x in twice["duplicates"]] == ["[0.2]"]
    phantom = chaos.write_checks(ops, {"log0": "[0.1][1.1][9.9]", "k0": "[0.3][1.2]", "k1": "[0.1]"})
    assert sorted((x["key"], x["token"]) for x in phantom["phantoms"]) == [("k1", "[0.1]"), ("log0", "[9.9]")]
    # an append a later put may have overwritten is not lost
    overwritten = ops + [(_op(2, 6.5, 8, "put", "k0", "[2.1]"), "ok")]
    assert chaos.write_checks(overwritten, {"log0": "[0.1][1.1]", "k0": "[2.1]"})["lost"] == []


def test_master_checks_find_two_masters_in_one_epoch_and_epochs_going_down(tmp_path):
    chaos = _chaos_module()
    events = [{"index": 1, "kind": "control.granted", "detail": {"holder": "kvstore/store/0#1", "epoch": 1}},
              {"index": 2, "kind": "control.granted", "detail": {"holder": "kvstore/store/1#1", "epoch": 2}},
              {"index": 3, "kind": "control.readopted", "detail": {"holder": "kvstore/store/2#1", "epoch": 2}},
              {"index": 4, "kind": "control.granted", "detail": {"holder": "kvstore/store/2#1", "epoch": 2}}]
    by_epoch, regressions = chaos.masters_from_events(events)
    assert by_epoch[2] == {"kvstore/store/1#1", "kvstore/store/2#1"} and by_epoch[1] == {"kvstore/store/0#1"}
    assert len(regressions) == 1
    logs = tmp_path / "logs" / "kvstore"
    for slot, inc, lines in [("store-0", 1, ["now master at epoch 1 (master store/0)",
                                             "now backup at epoch 3 (master store/1)"]),
                             ("store-1", 1, ["now master at epoch 3 (master store/1)"]),
                             ("store-2", 2, ["now backup at epoch 3 (master store/1)",
                                             "now master at epoch 3 (master store/2)",
                                             "now backup at epoch 2 (master store/0)"])]:
        (logs / slot).mkdir(parents=True)
        text = [f"2026-01-01 00:00:00,000 INFO netlets.runner: netlet kvstore/{slot.replace('-', '/')}#{inc} "
                f"starting (pid 1{inc}, mode cold, class kvstore:Store)"]
        text += [f"2026-01-01 00:00:01,000 INFO netlets.replicated: {line}" for line in lines]
        (logs / slot / f"20260101T000000.000000Z-{inc}.log").write_text("\n".join(text) + "\n")
    by_epoch, regressions, files = chaos.masters_from_logs(tmp_path)
    assert files == 3
    assert by_epoch[3] == {"kvstore/store/1#1", "kvstore/store/2#2"} and by_epoch[1] == {"kvstore/store/0#1"}
    assert len(regressions) == 1 and "store/2#2" in regressions[0]
