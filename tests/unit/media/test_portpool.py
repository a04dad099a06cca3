"""RTP port pairs from a configured range (media/portpool.py)."""

from __future__ import annotations

import pytest

from media.control import MediaError
from media.portpool import PortPool


def test_hands_out_even_rtp_ports_with_the_odd_rtcp_port_inside_the_range() -> None:
    pool = PortPool(20001, 20010)  # odd start: first pair is 20002/20003; 20010 has no 20011
    ports = [pool.acquire() for _ in range(pool.capacity)]
    assert ports == [20002, 20004, 20006, 20008]
    assert all(port % 2 == 0 and port + 1 <= 20010 for port in ports)


def test_exhaustion_raises_a_media_error_naming_the_range() -> None:
    pool = PortPool(30000, 30003)
    assert pool.capacity == 2
    pool.acquire()
    pool.acquire()
    with pytest.raises(MediaError, match=r"no free RTP port.*30000\.\.30003"):
        pool.acquire()


def test_released_ports_are_reused_last() -> None:
    pool = PortPool(30000, 30009)  # pairs 30000 … 30008
    first = pool.acquire()
    pool.release(first)
    following = [pool.acquire() for _ in range(pool.capacity - 1)]
    assert first not in following  # the freed port waits until the rest of the range was used
    assert pool.acquire() == first
    assert pool.free == 0


def test_release_is_idempotent_and_counts_stay_right() -> None:
    pool = PortPool(30000, 30005)
    port = pool.acquire()
    assert (pool.in_use, pool.free) == (1, pool.capacity - 1)
    pool.release(port)
    pool.release(port)
    assert (pool.in_use, pool.free) == (0, pool.capacity)


def test_unbindable_ports_are_skipped_until_nothing_else_is_left() -> None:
    pool = PortPool(30000, 30005)  # pairs 30000, 30002, 30004
    bad = pool.acquire()
    pool.mark_unusable(bad)
    assert pool.in_use == 0
    assert {pool.acquire(), pool.acquire()} == {30002, 30004}
    assert pool.acquire() == bad  # still tried when it is the only one left


@pytest.mark.parametrize(("low", "high"), [(0, 10), (10, 5), (30000, 30000), (65535, 65535)])
def test_invalid_ranges_are_refused(low: int, high: int) -> None:
    with pytest.raises(ValueError):
        PortPool(low, high)
