"""Pike-like flood protection with a fake clock."""

from __future__ import annotations

import pytest

from signaling import flood as flood_module
from signaling.flood import BanPolicy, FloodConfig, FloodGuard, Verdict

T0 = 1000.0


def guard(**kwargs: object) -> FloodGuard:
    return FloodGuard(FloodConfig(**kwargs))  # type: ignore[arg-type]


def test_requests_under_the_limit_pass() -> None:
    flood = guard(window=1.0, max_requests=10)
    # 8 per second, spread evenly, for 5 seconds: always allowed.
    verdicts = {flood.check_request("192.0.2.1", T0 + i * 0.125) for i in range(40)}
    assert verdicts == {Verdict.ALLOW}
    assert flood.stats.allowed == 40 and flood.stats.bans == 0


def test_burst_over_the_limit_bans_then_expires() -> None:
    flood = guard(window=1.0, max_requests=10, ban_time=30.0)
    verdicts = [flood.check_request("192.0.2.1", T0 + i * 0.01) for i in range(15)]
    assert verdicts[:10] == [Verdict.ALLOW] * 10
    assert verdicts[10:] == [Verdict.DROP] * 5
    assert flood.stats.bans == 1 and flood.stats.dropped == 5
    assert flood.is_banned("192.0.2.1", T0 + 29)
    # Other sources are unaffected.
    assert flood.check_request("192.0.2.2", T0 + 1) is Verdict.ALLOW
    # Requests during the ban do not extend it; after it, the source is served again.
    assert flood.check_request("192.0.2.1", T0 + 29.9) is Verdict.DROP
    assert not flood.is_banned("192.0.2.1", T0 + 31)
    assert flood.check_request("192.0.2.1", T0 + 31) is Verdict.ALLOW


def test_sliding_window_counts_the_previous_window() -> None:
    flood = guard(window=1.0, max_requests=10)
    for i in range(10):  # 10 requests at the end of the first window
        assert flood.check_request("198.51.100.7", T0 + 0.9 + i * 0.001) is Verdict.ALLOW
    # Early in the next window most of the previous count still overlaps: a fixed window would allow this.
    verdicts = [flood.check_request("198.51.100.7", T0 + 1.05 + i * 0.001) for i in range(5)]
    assert Verdict.DROP in verdicts


def test_reject_policy_answers_503() -> None:
    flood = guard(window=1.0, max_requests=2, policy=BanPolicy.REJECT_503)
    verdicts = [flood.check_request("192.0.2.9", T0) for _ in range(4)]
    assert verdicts == [Verdict.ALLOW, Verdict.ALLOW, Verdict.REJECT_503, Verdict.REJECT_503]
    assert flood.stats.rejected_503 == 2


def test_exempt_sources_are_never_limited() -> None:
    flood = guard(window=1.0, max_requests=1, exempt_sources=frozenset({"10.0.0.1"}))
    assert {flood.check_request("10.0.0.1", T0) for _ in range(100)} == {Verdict.ALLOW}


def test_ipv6_sources_in_one_64_share_a_budget() -> None:
    flood = guard(window=1.0, max_requests=5)
    verdicts = [flood.check_request(f"2001:db8:1:2::{i:x}", T0) for i in range(1, 8)]
    assert verdicts.count(Verdict.ALLOW) == 5
    assert flood.check_request("2001:db8:1:3::1", T0) is Verdict.ALLOW
    assert flood.source_key("::ffff:192.0.2.1") == "192.0.2.1"


def test_memory_is_bounded_and_idle_sources_are_swept() -> None:
    flood = guard(window=1.0, max_requests=5, max_tracked=100)
    for i in range(1000):
        flood.check_request(f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}", T0)
    assert flood.tracked <= 100
    assert flood.evictions == 900
    flood.sweep(T0 + 10)
    assert flood.tracked == 0


def test_sweep_keeps_banned_sources() -> None:
    flood = guard(window=1.0, max_requests=1, ban_time=100.0)
    flood.check_request("192.0.2.1", T0)
    flood.check_request("192.0.2.1", T0)
    flood.sweep(T0 + 10)
    assert flood.is_banned("192.0.2.1", T0 + 10)


def test_auth_failures_block_a_user_from_any_source() -> None:
    flood = guard(auth_window=60.0, max_auth_failures_per_user=3, auth_ban_time=600.0)
    for i in range(3):
        assert not flood.auth_blocked("alice", f"192.0.2.{i}", T0 + i)
        flood.record_auth_failure("alice", f"192.0.2.{i}", T0 + i)
    assert not flood.auth_blocked("alice", "192.0.2.50", T0 + 4)
    flood.record_auth_failure("alice", "192.0.2.3", T0 + 4)
    assert flood.auth_blocked("alice", "192.0.2.50", T0 + 5)
    assert not flood.auth_blocked("bob", "192.0.2.50", T0 + 5)
    # A right password during the ban does not lift it.
    flood.record_auth_success("alice", T0 + 6)
    assert flood.auth_blocked("alice", "192.0.2.60", T0 + 7)
    assert not flood.auth_blocked("alice", "192.0.2.60", T0 + 700)
    assert flood.stats.auth_bans == 1 and flood.stats.auth_failures == 4


def test_auth_failures_block_a_source_guessing_many_users() -> None:
    flood = guard(max_auth_failures_per_user=100, max_auth_failures_per_source=5)
    for i in range(6):
        flood.record_auth_failure(f"user{i}", "203.0.113.5", T0 + i)
    assert flood.auth_blocked("someone-else", "203.0.113.5", T0 + 7)
    assert not flood.auth_blocked("someone-else", "203.0.113.6", T0 + 7)


def test_success_clears_a_users_failure_history() -> None:
    flood = guard(max_auth_failures_per_user=3, max_auth_failures_per_source=100)
    for _ in range(3):
        flood.record_auth_failure("alice", "192.0.2.1", T0)
    flood.record_auth_success("alice", T0 + 1)
    flood.record_auth_failure("alice", "192.0.2.1", T0 + 2)
    assert not flood.auth_blocked("alice", "192.0.2.1", T0 + 3)


@pytest.mark.parametrize("bad", [{"window": 0}, {"max_requests": 0}, {"max_tracked": 0}])
def test_nonsense_configuration_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FloodConfig(**bad)  # type: ignore[arg-type]


def test_source_keys_are_remembered_within_a_bound() -> None:
    flood = FloodGuard(FloodConfig())
    assert flood.source_key("2001:db8:1:2::5") == flood.source_key("2001:db8:1:2::6") == "2001:db8:1:2::/64"
    assert flood.source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert flood.source_key("not an address") == "not an address"
    for index in range(flood_module._SOURCE_KEY_CACHE + 10):
        flood.source_key(f"10.0.{index // 256}.{index % 256}")
    assert len(flood._source_keys) <= flood_module._SOURCE_KEY_CACHE
    assert flood.source_key("2001:db8:1:2::7") == "2001:db8:1:2::/64"  # still right after the reset
