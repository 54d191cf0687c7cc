"""``hosting.election.promotions``: a waiting access point wakes at the promotion it waits for, by itself."""

from __future__ import annotations

import threading
import time

from hosting.election.promotions import Promotions


def test_a_wait_ends_at_the_first_promotion_beyond_its_epoch():
    promotions = Promotions()
    promotions.record("kv", 3)
    result = []
    waiter = threading.Thread(target=lambda: result.append(promotions.wait_beyond("kv", 3, 30)))
    waiter.start()
    promotions.record("other", 9)  # another app's promotion does not end it
    promotions.record("kv", 3)  # nor the same epoch again
    time.sleep(0.1)
    assert waiter.is_alive()
    started = time.monotonic()
    promotions.record("kv", 4)
    waiter.join(5)
    assert result == [True] and time.monotonic() - started < 2


def test_a_wait_with_nothing_promoted_times_out():
    promotions = Promotions()
    started = time.monotonic()
    assert promotions.wait_beyond("kv", 0, 0.2) is False
    assert time.monotonic() - started >= 0.2
    promotions.record("kv", 1)
    assert promotions.wait_beyond("kv", 0, 0) is True


def test_completed_until_another_epoch_is_recorded():
    promotions = Promotions()
    assert promotions.completed("kv", 5)  # nothing recorded in this run
    promotions.record("kv", 5)
    assert promotions.completed("kv", 5) and not promotions.completed("kv", 6)
