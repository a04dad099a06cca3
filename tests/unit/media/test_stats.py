"""Receive statistics (RFC 3550 A.1/A.3/A.8), RTT and the E-model (media/stats.py)."""

from __future__ import annotations

import itertools

import pytest

from media.rtcp import ReportBlock, RtcpSenderReport, ntp_from_unix, ntp_middle32
from media.stats import (
    OPUS,
    PCMU,
    PCMU_PLC,
    ReceiveStatistics,
    SendStatistics,
    delay_impairment,
    effective_equipment_impairment,
    estimate_mos,
    quality_snapshot,
    r_to_mos,
    rtt_from_compact,
)


def feed(stats: ReceiveStatistics, sequences: list[int], start_ts: int = 0, start: float = 0.0) -> None:
    """Packets 20 ms apart at 8 kHz; the timestamp follows the sequence number."""
    first = sequences[0]
    for seq in sequences:
        offset = (seq - first) & 0xFFFF
        stats.update(seq, (start_ts + 160 * offset) & 0xFFFFFFFF, start + 0.02 * offset)


def test_probation_skips_the_first_packet_as_rfc3550_a1() -> None:
    stats = ReceiveStatistics(1, 8000)
    assert stats.update(100, 0, 0.0) is False
    assert stats.update(101, 160, 0.02) is True
    assert (stats.base_sequence, stats.received, stats.expected) == (101, 1, 1)
    trusted = ReceiveStatistics(1, 8000, probation=0)
    assert trusted.update(100, 0, 0.0) is True
    assert (trusted.base_sequence, trusted.received, trusted.expected) == (100, 1, 1)


def test_probation_restarts_on_a_non_sequential_packet() -> None:
    stats = ReceiveStatistics(1, 8000)
    assert stats.update(100, 0, 0.0) is False
    assert stats.update(500, 0, 0.02) is False
    assert stats.update(501, 160, 0.04) is True
    assert stats.base_sequence == 501


def test_extended_sequence_across_wrap() -> None:
    stats = ReceiveStatistics(1, 8000, probation=0)
    feed(stats, [65534, 65535, 0, 1])
    assert stats.extended_highest_sequence == 65536 + 1
    assert stats.expected == 4 and stats.received == 4 and stats.cumulative_lost == 0
    block = stats.report_block(1.0)
    assert block.highest_sequence == 0x10001


def test_loss_and_fraction_lost_per_interval() -> None:
    stats = ReceiveStatistics(7, 8000, probation=0)
    feed(stats, [seq for seq in range(100) if seq not in (10, 20)])
    assert (stats.expected, stats.received, stats.cumulative_lost) == (100, 98, 2)
    assert stats.loss_percent == pytest.approx(2.0)
    block = stats.report_block(2.0)
    assert block == ReportBlock(ssrc=7, fraction_lost=5, packets_lost=2, highest_sequence=99, jitter=0)
    # 50 more without loss: the interval fraction resets, the cumulative count stays.
    feed(stats, list(range(100, 150)), start_ts=16000, start=2.0)
    block = stats.report_block(3.0)
    assert (block.fraction_lost, block.packets_lost, block.highest_sequence) == (0, 2, 149)
    # Half of the next interval lost: 128/256.
    feed(stats, list(range(150, 170, 2)), start_ts=24000, start=3.0)
    block = stats.report_block(4.0)
    assert block.fraction_lost == (9 << 8) // 19


def test_duplicates_make_cumulative_loss_negative() -> None:
    stats = ReceiveStatistics(1, 8000, probation=0)
    feed(stats, [0, 1, 2])
    stats.update(2, 320, 0.05)
    stats.update(1, 160, 0.06)
    assert stats.cumulative_lost == -2
    assert stats.duplicates_or_reordered == 2
    assert stats.loss_percent == 0.0
    assert stats.report_block(1.0).packets_lost == -2


def test_big_jump_needs_two_sequential_packets_to_resync() -> None:
    stats = ReceiveStatistics(1, 8000, probation=0)
    feed(stats, [0, 1, 2])
    assert stats.update(20000, 0, 0.1) is False
    assert stats.received == 3
    assert stats.update(20001, 160, 0.12) is True
    assert (stats.base_sequence, stats.received, stats.extended_highest_sequence) == (20001, 1, 20001)


def test_jitter_matches_hand_computed_rfc3550_a8() -> None:
    # Transit (arrival in timestamp units - RTP timestamp): 0, 0, 40, 0.
    # J = 0, then 0 + (40 - 0)/16 = 2.5, then 2.5 + (40 - 2.5)/16 = 4.84375.
    stats = ReceiveStatistics(1, 8000, probation=0)
    for seq, ts, arrival in [(0, 0, 0.0), (1, 160, 0.020), (2, 320, 0.045), (3, 480, 0.060)]:
        stats.update(seq, ts, arrival)
    assert stats.jitter == pytest.approx(4.84375)
    assert stats.jitter_ms == pytest.approx(4.84375 / 8)
    assert stats.report_block(1.0).jitter == 4


def test_jitter_is_zero_for_a_perfect_stream_across_timestamp_wrap() -> None:
    stats = ReceiveStatistics(1, 8000, probation=0)
    feed(stats, list(range(50)), start_ts=0xFFFFFFFF - 160 * 20)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_lsr_and_dlsr_in_report_block() -> None:
    stats = ReceiveStatistics(1, 8000, probation=0)
    feed(stats, [0, 1])
    ntp = 0x1234_5678_9ABC_DEF0
    stats.on_sender_report(ntp, now=10.0)
    block = stats.report_block(now=10.5)
    assert block.lsr == 0x5678_9ABC
    assert block.dlsr == 32768


def test_rtt_from_compact_rfc3550_example() -> None:
    # RFC 3550 §6.4.1, Figure 2: A = 0xb710:8000, LSR = 0xb705:2000, DLSR = 0x0005:4000 -> 6.125 s.
    assert rtt_from_compact(0xB7108000, 0xB7052000, 0x00054000) == pytest.approx(6.125)
    assert rtt_from_compact(0xB7108000, 0, 0) is None


def test_rtt_from_our_sender_report_and_their_receiver_report() -> None:
    sender = SendStatistics(0xAA, 8000)
    for index in range(50):
        sender.on_sent(160, 160 * index, now=9.0 + 0.02 * index)
    compound = sender.sender_report(now=10.0, wallclock=1_700_000_000.0)
    sr = compound[0]
    assert isinstance(sr, RtcpSenderReport)
    assert (sr.packet_count, sr.octet_count) == (50, 8000)
    assert sr.rtp_timestamp == 160 * 49 + 160  # extrapolated to the SR's time
    lsr = ntp_middle32(ntp_from_unix(1_700_000_000.0))
    # The peer held our SR for 0.5 s before answering; it arrives 0.7 s after we sent it.
    block = ReportBlock(0xAA, 0, 0, 0, 0, lsr=lsr, dlsr=32768)
    assert sender.on_report_block(block, now=10.7) == pytest.approx(0.2)
    assert sender.rtt == pytest.approx(0.2)
    assert sender.on_report_block(ReportBlock(0xBB, 0, 0, 0, 0, lsr=lsr, dlsr=0), now=11.0) is None
    assert sender.on_report_block(ReportBlock(0xAA, 0, 0, 0, 0, lsr=123, dlsr=0), now=11.0) is None


def test_e_model_reference_values() -> None:
    assert r_to_mos(93.2) == pytest.approx(4.41, abs=0.005)
    assert r_to_mos(-5) == 1.0 and r_to_mos(120) == 4.5
    assert delay_impairment(100) == 0.0
    assert delay_impairment(200) == pytest.approx(3.044, abs=0.001)
    assert effective_equipment_impairment(PCMU, 1.0) == pytest.approx(95 / 5.3)
    assert effective_equipment_impairment(PCMU_PLC, 0.0) == 0.0
    assert estimate_mos(PCMU_PLC, 0.0, 40.0) == pytest.approx(r_to_mos(93.2))


@pytest.mark.parametrize("codec", [PCMU, PCMU_PLC, OPUS])
def test_mos_is_monotonic_in_loss_and_delay(codec: object) -> None:
    from media.stats import CodecImpairment

    assert isinstance(codec, CodecImpairment)
    by_loss = [estimate_mos(codec, loss / 2, 50.0) for loss in range(0, 41)]
    assert all(a > b for a, b in itertools.pairwise(by_loss))
    by_delay = [estimate_mos(codec, 1.0, delay) for delay in range(0, 801, 10)]
    assert all(a >= b for a, b in itertools.pairwise(by_delay))
    assert by_delay[-1] < by_delay[0] - 0.5
    beyond_100 = [estimate_mos(codec, 1.0, delay) for delay in range(110, 801, 10)]
    assert all(a > b for a, b in itertools.pairwise(beyond_100))


def test_plc_helps_and_loss_hurts() -> None:
    assert estimate_mos(PCMU_PLC, 3.0, 60) > estimate_mos(PCMU, 3.0, 60)
    assert estimate_mos(PCMU_PLC, 3.0, 60) < estimate_mos(PCMU_PLC, 0.0, 60)


def test_quality_snapshot() -> None:
    stats = ReceiveStatistics(5, 8000, probation=0)
    feed(stats, [seq for seq in range(100) if seq % 25 != 7])
    snapshot = quality_snapshot(stats, PCMU_PLC, rtt=0.1, jitter_buffer_delay=0.04)
    assert snapshot.packets_expected == 100 and snapshot.packets_lost == 4
    assert snapshot.loss_percent == pytest.approx(4.0)
    assert snapshot.rtt_ms == pytest.approx(100.0)
    assert snapshot.one_way_delay_ms == pytest.approx(50 + 40 + 20)
    assert snapshot.mos == pytest.approx(estimate_mos(PCMU_PLC, 4.0, 110.0))
    assert 1.0 < snapshot.mos < 4.41
    exported = snapshot.as_dict()
    assert exported["loss_percent"] == pytest.approx(4.0) and exported["ssrc"] == 5
    empty = quality_snapshot(ReceiveStatistics(6, 8000), OPUS)
    assert (empty.packets_expected, empty.loss_percent, empty.rtt_ms) == (0, 0.0, None)


def test_receiver_report_built_from_statistics_round_trips() -> None:
    from media.rtcp import RtcpReceiverReport, build_receiver_report, parse_rtcp, serialize_rtcp

    stats = ReceiveStatistics(0xBEEF, 8000, probation=0)
    feed(stats, [seq for seq in range(60) if seq != 30])
    compound = build_receiver_report(0xF00D, [stats.report_block(2.0)], cname="leg-a@edge")
    parsed = parse_rtcp(serialize_rtcp(compound))
    assert parsed == compound
    rr = parsed[0]
    assert isinstance(rr, RtcpReceiverReport)
    assert (rr.reports[0].ssrc, rr.reports[0].packets_lost, rr.reports[0].highest_sequence) == (0xBEEF, 1, 59)


@pytest.mark.parametrize("make", [lambda: ReceiveStatistics(1, 0), lambda: SendStatistics(1, -8000)])
def test_clock_rate_must_be_positive(make: object) -> None:
    with pytest.raises(ValueError, match=r"^clock rate must be positive$"):
        make()  # type: ignore[operator]
