"""Adaptive jitter buffer on deterministic arrival schedules (media/jitterbuffer.py)."""

from __future__ import annotations

import random

import pytest

from media.jitterbuffer import DUE_TOLERANCE, Conceal, Frame, JitterBuffer, PutResult
from media.rtp import RtpPacket

FRAME = 0.02
SAMPLES = 160


def packet(seq: int, ts: int | None = None, ssrc: int = 1, marker: bool = False) -> RtpPacket:
    timestamp = (SAMPLES * seq if ts is None else ts) & 0xFFFFFFFF
    return RtpPacket(0, seq & 0xFFFF, timestamp, ssrc, seq.to_bytes(4, "big", signed=True), marker)


def run(
    buffer: JitterBuffer,
    arrivals: list[tuple[float, RtpPacket]],
    until: float,
    start: float = 0.0,
) -> list[tuple[float, Frame | Conceal]]:
    """Deliver arrivals as a clock ticking every 20 ms reaches them; one ``get`` per tick."""
    pending = sorted(arrivals, key=lambda item: item[0])
    out: list[tuple[float, Frame | Conceal]] = []
    index = 0
    tick = start
    while tick <= until:
        while index < len(pending) and pending[index][0] <= tick:
            buffer.put(pending[index][1], pending[index][0])
            index += 1
        result = buffer.get(tick)
        if result is not None:
            out.append((tick, result))
        tick = round(tick + FRAME, 9)
    return out


def played_sequences(out: list[tuple[float, Frame | Conceal]]) -> list[int]:
    return [result.packet.sequence_number for _, result in out if isinstance(result, Frame)]


def test_in_order_stream_plays_everything_after_the_initial_delay() -> None:
    buffer = JitterBuffer(8000, initial_delay=0.04)
    arrivals = [(0.005 + FRAME * i, packet(i)) for i in range(50)]
    out = run(buffer, arrivals, until=1.2)
    assert played_sequences(out) == list(range(50))
    assert out[0][0] >= 0.045  # waited the target delay
    assert buffer.late == buffer.lost == buffer.duplicates == 0
    # After the last packet: a few concealed frames (loss or silence?), then quiet.
    assert [type(r) for _, r in out[50:]] == [Conceal] * 5


def test_reordered_packets_play_in_order() -> None:
    buffer = JitterBuffer(8000, initial_delay=0.06)
    order = [0, 2, 1, 3, 5, 4, 6, 7, 9, 8]
    arrivals = [(0.02 * position + 0.001, packet(seq)) for position, seq in enumerate(order)]
    assert played_sequences(run(buffer, arrivals, until=0.5)) == list(range(10))
    assert buffer.late == 0


def test_reordering_before_playout_starts_moves_the_start_back() -> None:
    buffer = JitterBuffer(8000, initial_delay=0.06)
    assert buffer.put(packet(11), 0.0) is PutResult.ACCEPTED
    assert buffer.put(packet(10), 0.001) is PutResult.ACCEPTED
    out = run(buffer, [(0.02 * i, packet(11 + i)) for i in range(1, 5)], until=0.4, start=0.02)
    assert played_sequences(out)[:4] == [10, 11, 12, 13]


def test_duplicates_and_late_packets_are_counted_and_dropped() -> None:
    buffer = JitterBuffer(8000, initial_delay=0.04)
    for seq in range(5):
        buffer.put(packet(seq), FRAME * seq)
    assert buffer.put(packet(3), 0.09) is PutResult.DUPLICATE
    out = run(buffer, [], until=0.2, start=0.04)
    assert played_sequences(out) == [0, 1, 2, 3, 4]
    assert buffer.put(packet(2), 0.25) is PutResult.LATE
    assert (buffer.duplicates, buffer.late) == (1, 1)


def test_a_lost_packet_is_concealed_once() -> None:
    buffer = JitterBuffer(8000, initial_delay=0.04)
    arrivals = [(FRAME * seq, packet(seq)) for seq in range(20) if seq != 7]
    out = run(buffer, arrivals, until=0.5)
    kinds = [(type(r).__name__, r.packet.sequence_number if isinstance(r, Frame) else None) for _, r in out][
        :20
    ]
    assert kinds[7] == ("Conceal", None)
    assert played_sequences(out) == [seq for seq in range(20) if seq != 7]
    concealed = [r for _, r in out[:20] if isinstance(r, Conceal)]
    # Packet 8 was already buffered when slot 7 fell due: it comes along for FEC, then plays itself.
    assert concealed == [Conceal(7 * SAMPLES, SAMPLES, packet(8))]
    assert buffer.lost == 1
    assert buffer.with_next == 1


def test_only_the_slot_right_before_a_buffered_packet_gets_it_for_fec() -> None:
    buffer = JitterBuffer(8000, initial_delay=0.06, min_delay=0.06, max_delay=0.06)
    arrivals = [(FRAME * seq, packet(seq)) for seq in range(20) if seq not in (7, 8, 12)]
    out = run(buffer, arrivals, until=0.6)
    concealed = [r for _, r in out[:20] if isinstance(r, Conceal)]
    # Two lost in a row: the first slot has no packet after it (PLC), the second has packet 9 (FEC).
    assert concealed == [
        Conceal(7 * SAMPLES, SAMPLES, None),
        Conceal(8 * SAMPLES, SAMPLES, packet(9)),
        Conceal(12 * SAMPLES, SAMPLES, packet(13)),
    ]
    assert played_sequences(out) == [seq for seq in range(20) if seq not in (7, 8, 12)]
    assert (buffer.lost, buffer.late, buffer.with_next) == (3, 0, 2)


def test_the_next_packet_is_not_offered_for_fec_across_a_timestamp_gap() -> None:
    buffer = JitterBuffer(8000, initial_delay=0.06, min_delay=0.06, max_delay=0.06)
    arrivals = [(FRAME * seq, packet(seq)) for seq in range(5)]
    # Packet 5 lost; packet 6 starts a talkspurt 3 frames later than the slot after 5 (DTX in between).
    arrivals += [(FRAME * seq, packet(seq, ts=SAMPLES * (seq + 3), marker=seq == 6)) for seq in range(6, 12)]
    out = run(buffer, arrivals, until=0.5)
    concealed = [r for _, r in out if isinstance(r, Conceal)]
    assert concealed[0] == Conceal(5 * SAMPLES, SAMPLES, None)
    assert all(r.next_packet is None for r in concealed)
    assert played_sequences(out) == [0, 1, 2, 3, 4, *range(6, 12)]


def test_no_packet_after_the_gap_means_plain_concealment() -> None:
    buffer = JitterBuffer(8000, initial_delay=0.02, min_delay=0.02, max_delay=0.02)
    # Packet 5 lost and packet 6 only arrives after slot 5 was due: nothing to take FEC from.
    arrivals = [(FRAME * seq, packet(seq)) for seq in range(5)] + [(0.135, packet(6))]
    arrivals += [(FRAME * seq, packet(seq)) for seq in range(7, 10)]
    out = run(buffer, arrivals, until=0.4)
    assert next(r for _, r in out if isinstance(r, Conceal)) == Conceal(5 * SAMPLES, SAMPLES, None)
    assert 6 in played_sequences(out)
    assert buffer.with_next == 0


def jittered(count: int, lost: set[int], seed: int = 5) -> list[tuple[float, RtpPacket]]:
    rng = random.Random(seed)
    return [(FRAME * seq + rng.uniform(0.0, 0.030), packet(seq)) for seq in range(count) if seq not in lost]


def test_fec_reserve_holds_one_frame_more_only_while_the_stream_is_losing_packets() -> None:
    def target_after(count: int, lost: set[int], fec_reserve: bool) -> tuple[float, JitterBuffer]:
        buffer = JitterBuffer(8000, fec_reserve=fec_reserve)
        run(buffer, jittered(count, lost), until=FRAME * count)
        return buffer.target_delay, buffer

    plain, _ = target_after(200, set(), False)
    assert target_after(200, set(), True)[0] == plain  # no loss: no extra latency
    losing, reserved = target_after(200, {50, 120}, True)
    assert losing == pytest.approx(target_after(200, {50, 120}, False)[0] + FRAME)
    assert reserved.with_next == 2  # the packet after each loss was there in time for FEC
    # 250 packets (the window) after the last loss, the reserve is given back a quarter frame at a time.
    recovered, _ = target_after(600, {50, 120}, True)
    assert recovered == pytest.approx(target_after(600, {50, 120}, False)[0])


def test_a_packet_arriving_after_its_slot_was_concealed_is_late_not_played_twice() -> None:
    buffer = JitterBuffer(8000, initial_delay=0.04, min_delay=0.04, max_delay=0.04)
    arrivals = [(FRAME * seq, packet(seq)) for seq in range(20) if seq != 5]
    arrivals.append((FRAME * 5 + 0.2, packet(5)))  # 200 ms late
    out = run(buffer, arrivals, until=0.6)
    assert played_sequences(out) == [seq for seq in range(20) if seq != 5]
    assert buffer.late == 1
    assert sum(isinstance(r, Conceal) for _, r in out[:20]) == 1


def test_sequence_wraparound() -> None:
    buffer = JitterBuffer(8000, initial_delay=0.04)
    arrivals = [(FRAME * i, packet(65530 + i, ts=0xFFFFFF00 + SAMPLES * i)) for i in range(20)]
    out = run(buffer, arrivals, until=0.6)
    assert played_sequences(out) == [(65530 + i) & 0xFFFF for i in range(20)]
    frames = [r for _, r in out if isinstance(r, Frame)]
    assert [f.extended_sequence for f in frames] == list(range(65530, 65550))


def test_silence_period_conceals_a_little_then_resumes_the_next_talkspurt() -> None:
    buffer = JitterBuffer(8000, initial_delay=0.04, max_conceal_frames=3)
    arrivals = [(FRAME * i, packet(i)) for i in range(10)]
    # DTX: one second of silence; sequence continues, timestamp jumps, marker set.
    arrivals += [(1.2 + FRAME * i, packet(10 + i, ts=SAMPLES * (60 + i), marker=i == 0)) for i in range(10)]
    out = run(buffer, arrivals, until=2.0)
    assert played_sequences(out) == list(range(20))
    assert sum(isinstance(r, Conceal) for _, r in out) <= 3 + 3  # after each talkspurt
    assert buffer.late == 0 and buffer.resyncs == 0


def test_timestamp_jump_resyncs() -> None:
    buffer = JitterBuffer(8000, initial_delay=0.04)
    arrivals = [(FRAME * i, packet(i)) for i in range(10)]
    arrivals += [(0.2 + FRAME * i, packet(10 + i, ts=8000 * 600 + SAMPLES * i)) for i in range(10)]
    out = run(buffer, arrivals, until=1.0)
    assert buffer.resyncs == 1
    assert played_sequences(out)[-10:] == list(range(10, 20))


def test_new_ssrc_needs_two_sequential_packets() -> None:
    buffer = JitterBuffer(8000, initial_delay=0.04)
    for i in range(3):
        buffer.put(packet(i), FRAME * i)
    assert buffer.put(packet(900, ssrc=2), 0.06) is PutResult.HELD
    assert buffer.put(packet(5000, ssrc=3), 0.07) is PutResult.HELD
    assert buffer.put(packet(5001, ssrc=3), 0.08) is PutResult.RESYNCED
    assert len(buffer) == 2
    out = run(
        buffer,
        [(0.08 + FRAME * i, packet(5001 + i, ssrc=3)) for i in range(1, 5)],
        until=0.5,
        start=0.08,
    )
    assert played_sequences(out) == [5000, 5001, 5002, 5003, 5004, 5005]


def test_memory_is_bounded_under_garbage() -> None:
    rng = random.Random(7)
    buffer = JitterBuffer(8000, capacity=64)
    for i in range(20000):
        garbage = RtpPacket(
            rng.randrange(128),
            rng.randrange(65536),
            rng.randrange(1 << 32),
            rng.choice([1, 2, rng.randrange(1 << 32)]),
            b"",
        )
        buffer.put(garbage, i * 0.001)
        assert len(buffer) <= 64
        if i % 7 == 0:
            buffer.get(i * 0.001)
    assert buffer.received == 20000


@pytest.mark.parametrize("seed", [2024, 7, 99])
def test_three_percent_loss_and_30ms_jitter(seed: int) -> None:
    rng = random.Random(seed)
    count = 3000  # one minute of 20 ms frames
    arrivals = []
    lost = set()
    for seq in range(count):
        if rng.random() < 0.03:
            lost.add(seq)
            continue
        arrivals.append((0.05 + FRAME * seq + rng.uniform(0.0, 0.030), packet(seq)))
    buffer = JitterBuffer(8000, min_delay=0.02, max_delay=0.2, initial_delay=0.06)
    out = run(buffer, arrivals, until=FRAME * count + 0.5)
    frames = [r for _, r in out if isinstance(r, Frame)]
    sequences = [f.extended_sequence for f in frames]
    assert sequences == sorted(set(sequences))  # in order, never twice
    assert len(lost) in range(60, 120)
    # Everything that arrived is played except a few late ones; every missing slot is concealed.
    assert buffer.late <= 0.01 * count
    assert len(frames) + buffer.late == len(arrivals)
    concealed_in_stream = sum(isinstance(r, Conceal) for _, r in out) - buffer._max_conceal_frames
    # A few missing slots are dropped instead of concealed while playout catches up on latency.
    assert buffer.skipped <= 5
    assert concealed_in_stream + buffer.skipped == len(lost) + buffer.late
    assert buffer.lost == len(lost)
    # The delay adapted to the 30 ms spread, within bounds.
    assert 0.025 <= buffer.target_delay <= 0.045
    # Latency from arrival to playout stays bounded.
    arrival_of = {p.sequence_number: t for t, p in arrivals}
    waits = [tick - arrival_of[r.packet.sequence_number] for tick, r in out if isinstance(r, Frame)]
    assert max(waits) < 0.2
    assert sum(waits) / len(waits) < 0.06


def test_get_timer_tracks_the_next_due_frame() -> None:
    buffer = JitterBuffer(8000, initial_delay=0.04, min_delay=0.04, max_delay=0.04)
    assert buffer.get_timer() is None
    buffer.put(packet(0), 1.0)
    buffer.put(packet(1), 1.02)
    assert buffer.get_timer() == 1.04
    assert buffer.get(1.039) is None
    first = buffer.get(1.04)
    assert isinstance(first, Frame)
    timer = buffer.get_timer()
    assert timer is not None and abs(timer - 1.06) < 1e-9


def aligned_stream(seed: int, start: float, count: int) -> list[tuple[float, RtpPacket]]:
    """48 kHz packets sent every 20 ms from a random RTP timestamp, arriving without jitter at ``start``
    + 20 ms * n: with a fixed delay of two frames their deadlines fall exactly on a 20 ms clock started at
    ``start`` — in real numbers; in floats each is a rounding error either side."""
    rng = random.Random(seed)
    base_ts, base_seq = rng.getrandbits(32), rng.getrandbits(16)
    return [
        (
            start + i * FRAME,
            RtpPacket(111, (base_seq + i) & 0xFFFF, (base_ts + 960 * i) & 0xFFFFFFFF, 9, b"x"),
        )
        for i in range(count)
    ]


def tick_playout(
    buffer: JitterBuffer,
    arrivals: list[tuple[float, RtpPacket]],
    start: float,
    ticks: int,
) -> list[list[Frame | Conceal]]:
    """A media clock started at ``start`` (``start + n * 20 ms``, as a real one counts): at each tick the
    packets that arrived by then are put, then everything due is taken (at most four, as the decoding
    paths do)."""
    pending = sorted(arrivals, key=lambda item: item[0])
    per_tick: list[list[Frame | Conceal]] = []
    position = 0
    for tick in range(ticks):
        now = start + tick * FRAME
        while position < len(pending) and pending[position][0] <= now:
            buffer.put(pending[position][1], pending[position][0])
            position += 1
        taken: list[Frame | Conceal] = []
        while len(taken) < 4 and (item := buffer.get(now)) is not None:
            taken.append(item)
        per_tick.append(taken)
    return per_tick


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("start", [0.013, 100.0, 86_399.98])
def test_frames_due_exactly_on_a_clock_tick_play_on_that_tick(seed: int, start: float) -> None:
    buffer = JitterBuffer(48000, initial_delay=0.04, min_delay=0.04, max_delay=0.04)
    per_tick = tick_playout(buffer, aligned_stream(seed, start, 100), start, 110)
    # Each frame on its own tick, two ticks after it arrived: never a tick late by a rounding error and
    # then two at once to catch up.
    assert [len(items) for items in per_tick[:102]] == [0, 0] + [1] * 100
    assert all(isinstance(items[0], Frame) for items in per_tick[2:102])


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("extra", "played"), [(0.0, True), (2 * DUE_TOLERANCE, False)])
def test_a_packet_arriving_exactly_at_its_deadline_plays_and_just_after_is_concealed(
    seed: int, extra: float, played: bool
) -> None:
    start = 100.0
    buffer = JitterBuffer(48000, initial_delay=0.04, min_delay=0.04, max_delay=0.04)
    arrivals = aligned_stream(seed, start, 20)
    _, delayed = arrivals[5]
    # Packet 5 is due two frames after it was sent (tick 7): it arrives then, or a hair later.
    arrivals[5] = (start + 7 * FRAME + extra, delayed)
    per_tick = tick_playout(buffer, arrivals, start, 30)
    slot = per_tick[7]
    assert len(slot) == 1  # whatever happens, on time: never a tick later by chance
    if played:
        assert isinstance(slot[0], Frame) and slot[0].packet == delayed
        assert buffer.late == 0
    else:
        assert isinstance(slot[0], Conceal) and slot[0].next_packet is not None
        assert buffer.late == 1
    assert [len(items) for items in per_tick[2:22]] == [1] * 20


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clock_rate": 0}, "clock rate must be positive"),
        (
            {"clock_rate": 8000, "min_delay": 0.5, "max_delay": 0.1},
            "jitter buffer needs 0 <= min_delay <= max_delay",
        ),
        (
            {"clock_rate": 8000, "capacity": 1},
            "jitter buffer capacity must be at least 2",
        ),
    ],
)
def test_constructor_errors(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        JitterBuffer(**kwargs)  # type: ignore[arg-type]


def test_descending_flood_before_playout_stays_within_capacity() -> None:
    buffer = JitterBuffer(8000, capacity=16, initial_delay=0.3)
    for step in range(2000):
        buffer.put(packet(60000 - 5 * step, ts=1000), step * 1e-5)
        assert len(buffer) <= 16
