"""Unit tests of the hosting node's small mechanisms (real threads, real processes, real SQLite)."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import tarfile
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hosting.backoff import next_restart
from hosting.codebases import CodebaseStore
from hosting.control import ControlLeases, LeaseFenced
from hosting.lessor import Lessor
from hosting.pidwatch import PidWatcher, describe_status
from hosting.registry import Registry
from hosting.timers import Timers
from testkit.wait import wait_for
from warrants.descriptor_model import RestartPolicy
from warrants.errors import BadInput


# -- backoff ---------------------------------------------------------------
@given(base=st.floats(0.01, 5), cap_factor=st.floats(1, 100), failures=st.integers(0, 40),
       give_up=st.integers(0, 10), run=st.floats(0, 100), seed=st.integers())
def test_backoff_is_bounded_and_gives_up_per_policy(base, cap_factor, failures, give_up, run, seed):
    policy = RestartPolicy(backoff_base=base, backoff_cap=base * cap_factor, healthy_after=10.0,
                           give_up_after=give_up)
    d = next_restart(policy, failures, run, random.Random(seed))
    expected_failures = 1 if run >= 10.0 else failures + 1
    assert d.failures == expected_failures
    if give_up and expected_failures >= give_up:
        assert d.delay is None
    elif expected_failures == 1:
        assert d.delay == 0.0
    else:
        ceiling = min(policy.backoff_cap, base * 2 ** (expected_failures - 2))
        assert ceiling / 2 <= d.delay <= ceiling


# -- timers and lessor -------------------------------------------------------
def test_timers_run_in_deadline_order_and_cancel():
    timers = Timers()
    seen, done = [], threading.Event()
    try:
        timers.call_later(0.06, lambda: (seen.append("late"), done.set()))
        t = timers.call_later(0.03, lambda: seen.append("cancelled"))
        timers.call_later(0.01, lambda: seen.append("early"))
        Timers.cancel(t)
        assert done.wait(2)
        assert seen == ["early", "late"]
    finally:
        timers.stop()


def test_lease_expires_unless_renewed_and_revoke_is_silent():
    timers = Timers()
    expired = []
    lessor = Lessor(timers, expired.append)
    try:
        lessor.grant("a", 0.15)
        lessor.grant("b", 0.15)
        lessor.grant("c", 0.15)
        lessor.revoke("c")
        for _ in range(4):  # keep "a" alive for 0.4 s
            time.sleep(0.08)  # the renewal cadence under test, not synchronisation
            assert lessor.renew("a") is not None
        wait_for(lambda: "b" in expired, 2, "b to expire")
        assert "a" not in expired and "c" not in expired
        assert lessor.renew("b") is None  # an expired lease is not resurrected
        wait_for(lambda: "a" in expired, 2, "a to expire once renewals stop")
        assert expired.count("a") == 1
    finally:
        timers.stop()


def test_a_lease_expires_into_its_own_callback_kept_across_re_grants():
    timers = Timers()
    default, own = [], []
    lessor = Lessor(timers, default.append)
    try:
        lessor.grant("mine", 5.0, lambda: own.append("mine"))
        lessor.grant("mine", 0.1)  # a re-grant (new ttl) keeps the lease's callback
        lessor.grant("other", 0.1)
        wait_for(lambda: own and default, 2, "both leases to expire")
        assert own == ["mine"] and default == ["other"]
    finally:
        timers.stop()


# -- registry and control leases -------------------------------------------
def test_registry_events_are_ordered_and_epochs_never_go_back(tmp_path):
    reg = Registry(tmp_path / "r.sqlite")
    a = reg.add_event("x", "app", None, n=1)
    b = reg.add_event("y", "app", "s/0", n=2)
    assert b > a and [e.kind for e in reg.events(0)] == ["x", "y"]
    assert [e.kind for e in reg.events(a)] == ["y"]
    reg.save_arbiter_state("app", {"epoch": 5, "holder": "s/0", "isr": ["s/0"]})
    with pytest.raises(ValueError):
        reg.save_arbiter_state("app", {"epoch": 4, "holder": "s/0", "isr": []})
    reg.close()
    reopened = Registry(tmp_path / "r.sqlite")
    assert reopened.load_arbiter_state("app") == {"epoch": 5, "holder": "s/0", "isr": ["s/0"]}
    assert reopened.add_event("z") > b


def test_control_lease_epochs_strictly_increase_and_fence_old_holders(tmp_path):
    from hosting.election.arbiter import Arbiter
    from hosting.registry import RegistryEpochStore

    reg = Registry(tmp_path / "r.sqlite")
    timers = Timers()
    lost = []

    def make(registry):
        holder = {}

        def on_expire(lease_id):
            holder["c"].expired(lease_id.split(":", 1)[1])

        holder["c"] = ControlLeases(registry, Arbiter(RegistryEpochStore(registry)), Lessor(timers, on_expire),
                                    lambda *a: lost.append(a))
        return holder["c"]

    control = make(reg)
    try:
        e1 = control.acquire("app", "app/s/0#1", 0.2)
        with pytest.raises(LeaseFenced):
            control.acquire("app", "app/s/1#1", 0.2)
        assert control.renew("app", "app/s/0#1", e1, 0.2) == 0.2
        wait_for(lambda: lost, 3, "the control lease to expire")
        with pytest.raises(LeaseFenced):
            control.renew("app", "app/s/0#1", e1, 0.2)
        e2 = control.acquire("app", "app/s/1#1", 0.2)
        assert e2 > e1
        assert control.revoke_if_held_by("app", "app/s/1#1", "holder crashed")
        # a restarted registry never hands out an old epoch
        reg.close()
        control2 = make(Registry(tmp_path / "r.sqlite"))
        assert control2.acquire("app", "app/s/0#2", 0.2) > e2
    finally:
        timers.stop()



def test_the_control_lease_stays_with_the_granted_process_when_its_slot_restarts(tmp_path):
    """A newer process in the holder's slot (started by its host before the holder's death was
    acted on) neither holds nor renews the lease; revoking the dead holder still finds it."""
    from hosting.election.arbiter import Arbiter
    from hosting.registry import RegistryEpochStore

    reg = Registry(tmp_path / "r.sqlite")
    timers = Timers()
    arbiter = Arbiter(RegistryEpochStore(reg))
    control = ControlLeases(reg, arbiter, Lessor(timers, lambda lease_id: None), lambda *a: None)
    try:
        epoch = control.acquire("app", "app/s/0#1", 30)
        arbiter.netlet_started("app", "s/0", "app/s/0#2")
        assert control.holder("app") == "app/s/0#1"
        with pytest.raises(LeaseFenced):
            control.renew("app", "app/s/0#2", epoch, 30)
        assert not control.revoke_if_held_by("app", "app/s/0#2", "not the holder")
        assert control.revoke_if_held_by("app", "app/s/0#1", "holder crashed")
        assert control.holder("app") is None
    finally:
        timers.stop()
        reg.close()

# -- pid watcher -----------------------------------------------------------
def test_pidwatch_reports_exit_status_at_once_and_reaps():
    exits = {}
    done = threading.Event()

    def on_exit(key, status):
        exits[key] = describe_status(status)
        if len(exits) == 2:
            done.set()

    watcher = PidWatcher(on_exit)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    quitter = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"], start_new_session=True)
    try:
        watcher.watch("sleeper", sleeper.pid, is_child=True)
        watcher.watch("quitter", quitter.pid, is_child=True)
        assert watcher.signal_group("sleeper", signal.SIGKILL)
        assert done.wait(10)
        assert exits == {"sleeper": {"signal": "SIGKILL"}, "quitter": {"exit_code": 7}}
        with pytest.raises(ChildProcessError):
            os.waitpid(sleeper.pid, os.WNOHANG)  # already reaped by the watcher: no zombie
        assert not watcher.signal("sleeper", signal.SIGTERM)  # never signals a gone process
    finally:
        for p in (sleeper, quitter):
            if p.poll() is None:
                p.kill()
        watcher.stop()


def test_pidwatch_reports_exits_that_happen_while_it_is_busy_together_each_once():
    """Deaths while the handler of earlier ones runs are reaped and reported as one batch (the
    supervisor handles a batch under one lock acquisition): each exactly once."""
    batches = []
    done = threading.Event()
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
                for _ in range(4)]

    def on_exits(batch):
        batches.append(sorted(key for key, _ in batch))
        if len(batches) == 1:  # busy with the first death: the other three die meanwhile
            for p in sleepers[1:]:
                p.kill()
                os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # dead (a zombie), not reaped
        if sum(map(len, batches)) == len(sleepers):
            done.set()

    watcher = PidWatcher(on_exits=on_exits)
    try:
        for i, p in enumerate(sleepers):
            watcher.watch(i, p.pid, is_child=True)
        sleepers[0].kill()
        assert done.wait(10)
        assert batches == [[0], [1, 2, 3]]
    finally:
        for p in sleepers:
            if p.poll() is None:
                p.kill()
        watcher.stop()


def test_pidwatch_reports_a_watch_with_its_own_handler_to_that_handler_alone():
    """One watcher serves netlets (its batch handler) and bootstrap runs (their own handler), each
    exit reported once, to its own handler, and reaped."""
    batches, own = [], []
    done, own_done = threading.Event(), threading.Event()

    def on_exits(batch):
        batches.append(sorted(key for key, _ in batch))
        done.set()

    def on_exit(key, status):
        own.append((key, describe_status(status)))
        own_done.set()

    watcher = PidWatcher(on_exits=on_exits)
    netlet = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        watcher.watch("netlet", netlet.pid, is_child=True)
        watcher.watch(("bootstrap", "app"), run.pid, is_child=True, on_exit=on_exit)
        assert watcher.signal_group(("bootstrap", "app"), signal.SIGTERM)
        assert own_done.wait(10)
        assert watcher.signal_group("netlet", signal.SIGKILL)
        assert done.wait(10)
        assert own == [(("bootstrap", "app"), {"signal": "SIGTERM"})]
        assert batches == [["netlet"]]
        with pytest.raises(ChildProcessError):
            os.waitpid(run.pid, os.WNOHANG)  # reaped by the watcher like any other child
    finally:
        for p in (netlet, run):
            if p.poll() is None:
                p.kill()
        watcher.stop()


# -- codebases ---------------------------------------------------------------
def _tar(entries):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_codebase_store_is_content_addressed_and_refuses_traversal(tmp_path):
    store = CodebaseStore(tmp_path / "cb")
    data = _tar([("mod.py", b"X = 1\n")])
    sha = store.add(data)
    assert store.add(data) == sha and (store.dir_of(sha) / "mod.py").read_text() == "X = 1\n"
    with pytest.raises(BadInput, match="sha256 mismatch"):
        store.add(data, "0" * 64)
    with pytest.raises(BadInput):
        store.add(_tar([("../escape.py", b"bad")]))
    assert not (tmp_path / "escape.py").exists()
    with pytest.raises(BadInput):
        store.add(b"not a tar at all")


def test_node_side_descriptor_parsing_never_opens_files_the_document_names(tmp_path):
    import warrants

    xml = (b'<app xmlns="urn:jtrix:descriptor:1" name="x"><codebase path="/nonexistent"/>'
           b'<netlet type="w" class="m:C"/><warrant href="/nonexistent/secret.xml"/></app>')
    d = warrants.parse_descriptor(xml, "<network>", read_files=False)
    assert d.warrant_xml is None and d.warrant_source == "/nonexistent/secret.xml"
    with pytest.raises(BadInput, match="not found"):
        warrants.parse_descriptor(xml, "<network>")  # the launcher's local parse does read it


def test_nonce_cache_refuses_replays_and_forgets_only_what_left_the_window(monkeypatch):
    """Each nonce once per window; expired nonces are dropped from the front, so the
    cache holds one window's worth however many calls it has seen."""
    from warrants import replay

    clock = [1000.0]
    monkeypatch.setattr(replay.time, "monotonic", lambda: clock[0])
    cache = replay.NonceCache(window=10.0)
    now = time.time()
    assert cache.fresh("a", now) and not cache.fresh("a", now)
    assert not cache.fresh("b", now - 11)  # its timestamp is outside the window
    for i in range(20_000):  # 20 000 calls over 100 s: at most ~10 s worth are kept
        clock[0] += 0.005
        assert cache.fresh(f"n{i}", now)
    assert len(cache._seen) <= 2001
    assert not cache.fresh("n19999", now)  # still inside the window: a replay
    clock[0] += 11
    assert cache.fresh("a", now) and cache.fresh("n19999", now)  # both long gone from the window
