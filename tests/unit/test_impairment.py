"""The impairment proxy's pure logic (bench/peers/impairment.py): per-packet drop/delay decisions from a
seeded RNG, and the order packets leave in. No sockets, no clocks."""

from __future__ import annotations

import random
import statistics

import pytest

from bench.peers.impairment import Fate, Impairment, decide, release_order, schedule


class ScriptedRng(random.Random):
    """Returns the given draws in order (and fails loudly when asked for more)."""

    def __init__(self, draws: list[float]) -> None:
        super().__init__(0)
        self.draws = list(draws)
        self.taken = 0

    def random(self) -> float:
        self.taken += 1
        return self.draws.pop(0)


@pytest.mark.parametrize(
    ("loss", "max_jitter"), [(-0.01, 0.03), (1.5, 0.03), (0.03, -0.001), (0.03, float("nan"))]
)
def test_impairment_rejects_impossible_settings(loss: float, max_jitter: float) -> None:
    with pytest.raises(ValueError):
        Impairment(loss=loss, max_jitter=max_jitter)


def test_defaults_are_three_percent_and_thirty_ms() -> None:
    assert Impairment() == Impairment(loss=0.03, max_jitter=0.030)


def test_a_loss_draw_below_the_rate_drops_the_packet_and_still_consumes_the_delay_draw() -> None:
    rng = ScriptedRng([0.029, 0.9])
    assert decide(Impairment(0.03, 0.03), rng) == Fate(True, 0.0)
    assert rng.taken == 2


def test_a_kept_packet_is_delayed_by_its_draw_times_the_maximum_jitter() -> None:
    rng = ScriptedRng([0.03, 0.5])  # exactly the loss rate: kept (drop only strictly below)
    fate = decide(Impairment(0.03, 0.030), rng)
    assert fate.dropped is False
    assert fate.delay == pytest.approx(0.015)


def test_no_loss_and_no_jitter_forwards_everything_at_once() -> None:
    fates = schedule(Impairment(0.0, 0.0), seed=1, count=500)
    assert fates == [Fate(False, 0.0)] * 500


def test_total_loss_drops_everything() -> None:
    assert all(f.dropped for f in schedule(Impairment(1.0, 0.03), seed=1, count=200))


def test_schedule_is_repeatable_per_seed_and_differs_between_seeds() -> None:
    impairment = Impairment()
    assert schedule(impairment, 7, 1000) == schedule(impairment, 7, 1000)
    assert schedule(impairment, 7, 1000) != schedule(impairment, 8, 1000)


def test_schedule_matches_what_the_proxy_draws_packet_by_packet() -> None:
    rng = random.Random(42)
    by_hand = [decide(Impairment(), rng) for _ in range(300)]
    assert schedule(Impairment(), 42, 300) == by_hand


def test_loss_rate_and_jitter_spread_over_a_long_seeded_run() -> None:
    fates = schedule(Impairment(0.03, 0.030), seed=20261201, count=20_000)
    dropped = sum(f.dropped for f in fates)
    # Binomial(20000, 0.03): mean 600, sd ~24; the seed fixes the outcome, the bound documents the model.
    assert 500 < dropped < 700
    delays = [f.delay for f in fates if not f.dropped]
    assert min(delays) >= 0.0
    assert max(delays) < 0.030
    assert statistics.fmean(delays) == pytest.approx(0.015, abs=0.0005)
    # Uniform: each 5 ms bin holds about a sixth of the packets.
    bins = [sum(1 for d in delays if k * 0.005 <= d < (k + 1) * 0.005) for k in range(6)]
    assert all(abs(b / len(delays) - 1 / 6) < 0.02 for b in bins)


def test_a_drop_does_not_shift_the_delays_of_later_packets() -> None:
    """Two draws per packet whatever happens: the same seed gives the same delays with and without loss,
    so an impaired run differs from a jitter-only run only in the dropped packets."""
    jitter_only = schedule(Impairment(0.0, 0.030), seed=5, count=2000)
    lossy = schedule(Impairment(0.2, 0.030), seed=5, count=2000)
    assert any(f.dropped for f in lossy)
    for plain, impaired in zip(jitter_only, lossy, strict=True):
        if not impaired.dropped:
            assert impaired.delay == plain.delay


def test_release_order_follows_send_time_plus_delay_and_skips_dropped_packets() -> None:
    send_times = [0.0, 0.02, 0.04, 0.06]
    fates = [Fate(False, 0.03), Fate(False, 0.0), Fate(True, 0.0), Fate(False, 0.001)]
    # Packet 0 leaves at 30 ms, after packet 1 (20 ms); packet 2 is dropped; packet 3 leaves at 61 ms.
    assert release_order(send_times, fates) == [1, 0, 3]


def test_thirty_ms_of_jitter_reorders_a_20_ms_stream_but_never_by_more_than_one_step() -> None:
    fates = schedule(Impairment(0.0, 0.030), seed=3, count=2000)
    order = release_order([i * 0.02 for i in range(2000)], fates)
    assert sorted(order) == list(range(2000))
    assert order != list(range(2000))  # some packets overtake their predecessor
    # A delay below 30 ms can only let a packet overtake the one or two sent just before it.
    assert all(abs(position - index) <= 2 for position, index in enumerate(order))


def test_release_order_needs_one_fate_per_packet() -> None:
    with pytest.raises(ValueError):
        release_order([0.0, 0.02], [Fate(False, 0.0)])
