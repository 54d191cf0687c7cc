"""The pipelined client path: many calls in flight, each applied at most once.

End to end on examples/kvstore: futures carry each call's own result or
error; thousands of pipelined appends across a SIGKILL of the master are each
applied at most once, and every acknowledged one is in the final state.
Units: outcome capture/unwrap keeps the error a direct call raises; a bad
pipeline configuration is refused at construction; malformed batches are
refused by the netlet.
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import wait

import pytest
from hypothesis import given
from hypothesis import strategies as st

import netlets
from rpc import wire
from rpc.credential import client_handshake
from netlets.host import MAX_BATCH
from netlets.outcomes import capture, unwrap
from netlets.pipeline import PipelineConfig
from testkit.kvstore import launch_kvstore, wait_master
from testkit.node import master_of
from testkit.wait import wait_for
from rpc.errors import CommandFailed, NotMaster
from warrants.errors import BadInput, JtrixError, NotFound


# ---------------------------------------------------------------- units

@given(st.text(max_size=20))
def test_outcomes_keep_what_a_direct_call_raises(message):
    for exc, expected in [(NotMaster(message), NotMaster), (NotFound(message), NotFound),
                          (CommandFailed(f"ValueError: {message}"), CommandFailed),
                          (KeyError(message), CommandFailed)]:
        def boom(exc=exc):
            raise exc
        outcome = capture(boom)
        assert not outcome["ok"]
        with pytest.raises(expected):
            unwrap(outcome)
    assert unwrap(capture(lambda: message)) == message


def test_an_app_exception_named_like_a_jtrix_error_stays_the_apps():
    class NotFound(Exception):  # the app's own class, not jtrix's
        pass

    def boom():
        raise NotFound("mine")
    with pytest.raises(CommandFailed, match="NotFound: mine"):
        unwrap(capture(boom))


@pytest.mark.parametrize("kwargs", [{"window": 0}, {"max_batch": 0}, {"max_batch": MAX_BATCH + 1},
                                    {"max_in_flight": 0}])
def test_pipeline_config_is_checked_at_construction(kwargs):
    with pytest.raises(ValueError):
        PipelineConfig(**kwargs)


# ---------------------------------------------------------------- end to end

def test_futures_carry_each_calls_own_result(node, tmp_path):
    launch_kvstore(node, tmp_path, durability="memory")
    kv = netlets.connect("kvstore", pipeline=PipelineConfig(window=2, max_batch=64))
    try:
        puts = [kv.submit("put", f"k{i}", f"v{i}") for i in range(2000)]
        assert all(f.result(timeout=60) is None for f in puts)
        cas_ok = kv.submit("cas", "k1", "v1", "changed")
        cas_no = kv.submit("cas", "k2", "wrong", "changed")
        bad = kv.submit("put", "k3", None)  # the method refuses: only this future fails
        reads = [kv.submit("get_latest", f"k{i}") for i in (0, 1999)]
        assert cas_ok.result(30) is True and cas_no.result(30) is False
        with pytest.raises(CommandFailed):
            bad.result(30)
        assert [f.result(30) for f in reads] == ["v0", "v1999"]
        assert kv.get_latest("k1") == "changed" and kv.get_latest("k3") == "v3"
        with pytest.raises(NotFound):
            kv.submit("no_such_method")
    finally:
        kv.close()


def test_pipelined_appends_across_master_sigkill_apply_at_most_once(node, tmp_path):
    launch_kvstore(node, tmp_path, ttl=0.6)
    kv = netlets.connect("kvstore", timeout=30)
    try:
        first = node.app("kvstore")
        futures = {}
        for i in range(3000):
            futures[f"<{i}>"] = kv.submit("append", "log", f"<{i}>")
            if i == 1000:  # many calls in flight when the master dies
                os.kill(master_of(first)["pid"], signal.SIGKILL)
        wait(futures.values(), timeout=90)
        acked = {v for v, f in futures.items() if f.done() and f.exception() is None}
        failed = {v: f.exception() for v, f in futures.items() if f.exception() is not None}
        assert all(isinstance(e, netlets.Unavailable) for e in failed.values()), failed
        wait_master(node, above_epoch=first["epoch"])
        final = kv.get_latest("log")
        for value in futures:
            assert final.count(value) <= 1, f"{value} applied twice"
        missing = [v for v in acked if v not in final]
        assert not missing, f"{len(missing)} acknowledged appends lost, e.g. {missing[:3]}"
        assert len(acked) > 2500
    finally:
        kv.close()


def test_malformed_batches_are_refused(node, tmp_path):
    launch_kvstore(node, tmp_path, durability="memory")
    app = node.app("kvstore")
    proxy = wire.proxy(master_of(app)["endpoint"])
    proxy._pyroHandshake = client_handshake(node.app_secret("kvstore"), "kvstore", master_of(app)["netlet"])
    try:
        with pytest.raises(BadInput):  # items as an access point sends them (its request ids)
            proxy.invoke_batch([["put", [f"k{i}", "v"], {}, f"{'c' * 16}-{i}"] for i in range(MAX_BATCH + 1)])
        with pytest.raises(BadInput):
            proxy.invoke_batch([["put", ["k", "v"]]])
        with pytest.raises(JtrixError):
            proxy.invoke_batch("put")
        outcomes = proxy.invoke_batch([["put", ["k", "v"], {}, "r1"], ["nope", [], {}, None],
                                       ["put", ["k", "w"], {}, "r1"]])  # same request id: applied once
        assert outcomes[0] == {"ok": True, "value": None}
        assert outcomes[1]["error"]["type"] == "NotFound"
        assert outcomes[2] == outcomes[0]
        assert wait_for(lambda: proxy.invoke("get_latest", ["k"], {}) == "v", 10, "the first put only")
    finally:
        proxy._pyroRelease()
