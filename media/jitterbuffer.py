"""Adaptive jitter buffer for decoding paths (pure, sans-IO: arrival times and ``now`` are parameters).

Playout timing: a packet with (extended) RTP timestamp ``ts`` is due at ``ts / clock_rate + offset``.
The offset aims at ``base_transit + target``, where ``base_transit`` is the smallest observed
``arrival - ts / clock_rate`` over a sliding window (it follows path and clock drift) and ``target`` is a
high quantile of how much later than that packets arrive, clamped to ``[min_delay, max_delay]``. The
offset grows at once (late packets are lost audio) and shrinks by a quarter frame per re-estimate
(every 16 packets), so playout never jumps ahead and skips slots. With ``fec_reserve`` (for a decoder
with in-band FEC) the target is one frame longer while the stream is losing packets (a loss within the
last ``window`` packets): the packet after a lost one then usually arrives before the lost slot is due,
and its FEC replaces PLC, for 20 ms more latency only on lossy paths.

``get(now)`` is called by the decoder's clock (every frame): it returns the next ``Frame`` when due, a
``Conceal`` marker when a slot is due and its packet is missing (the decoder runs PLC), or None when
nothing is due (before start, during a silence period/DTX after a few concealed frames). When the packet
right after the missing one is already buffered, ``Conceal.next_packet`` carries it: a codec with in-band
FEC (Opus LBRR) rebuilds the lost frame from it instead of extrapolating; it still comes out as a
``Frame`` in its own turn.

A slot is due when ``now`` reaches its deadline within ``DUE_TOLERANCE``: deadlines are sums of
timestamps/clock rate and a measured offset, so a clock whose ticks coincide with them (a 20 ms clock
started at the first arrival, a fake clock) would otherwise see them a rounding error early or late —
one frame on time, the next a tick later and then two at once, and a packet arriving within the tick
after its deadline played or concealed by chance.

Memory is bounded: only sequence numbers in ``[next, next + capacity)`` are stored; anything else is
late (dropped, counted) or a jump that must be confirmed by a following packet before the buffer resyncs.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from media.rtp import RtpPacket, seq_diff, ts_diff

DUE_TOLERANCE = 1e-6
"""Seconds: far below one sample at 48 kHz (20.8 µs), far above float rounding of the deadlines."""


@dataclass(frozen=True, slots=True)
class Frame:
    packet: RtpPacket
    extended_sequence: int


@dataclass(frozen=True, slots=True)
class Conceal:
    """A slot with no packet: the decoder should synthesise ``samples`` samples (PLC).

    ``next_packet``: the packet that follows the gap directly (next sequence number, timestamp right
    after this slot), when it is already buffered — its in-band FEC, if the codec has any, describes
    exactly this slot. It stays buffered and is returned as a ``Frame`` next.
    """

    timestamp: int
    samples: int
    next_packet: RtpPacket | None = None


class PutResult(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"
    HELD = "held"
    """A sequence/SSRC jump waiting for the next packet to confirm it (garbage never gets further)."""
    RESYNCED = "resynced"


class JitterBuffer:
    __slots__ = (
        "_base_transit",
        "_candidate",
        "_capacity",
        "_clock_rate",
        "_conceal_run",
        "_fec_reserve",
        "_frame_samples",
        "_initial_delay",
        "_last_loss",
        "_last_put",
        "_max_conceal_frames",
        "_max_delay",
        "_min_delay",
        "_next_sequence",
        "_packets",
        "_play_timestamp",
        "_playout_offset",
        "_puts_since_estimate",
        "_quantile",
        "_resync_threshold",
        "_ssrc",
        "_started",
        "_timestamp_reference",
        "_transits",
        "_window",
        "concealed",
        "duplicates",
        "held",
        "late",
        "lost",
        "played",
        "received",
        "resyncs",
        "skipped",
        "with_next",
    )

    def __init__(
        self,
        clock_rate: int,
        *,
        min_delay: float = 0.02,
        max_delay: float = 0.3,
        initial_delay: float = 0.06,
        frame_duration: float = 0.02,
        capacity: int = 256,
        max_conceal_frames: int = 5,
        quantile: float = 0.99,
        window: int = 250,
        resync_threshold: float = 3.0,
        fec_reserve: bool = False,
    ) -> None:
        if clock_rate <= 0:
            raise ValueError("clock rate must be positive")
        if not 0 <= min_delay <= max_delay:
            raise ValueError("jitter buffer needs 0 <= min_delay <= max_delay")
        if capacity < 2:
            raise ValueError("jitter buffer capacity must be at least 2")
        self._clock_rate = clock_rate
        self._min_delay = min_delay
        self._max_delay = max_delay
        self._initial_delay = min(max(initial_delay, min_delay), max_delay)
        self._frame_samples = max(1, round(frame_duration * clock_rate))
        self._capacity = capacity
        self._max_conceal_frames = max_conceal_frames
        self._quantile = quantile
        self._resync_threshold = resync_threshold
        self._transits: deque[float] = deque(maxlen=window)
        self._window = window
        self._fec_reserve = fec_reserve
        self._last_loss: int | None = None  # ``received`` when a packet was last found missing
        self._packets: dict[int, tuple[RtpPacket, int]] = {}
        self._candidate: RtpPacket | None = None
        self.received = 0
        self.duplicates = 0
        self.late = 0
        self.lost = 0
        self.concealed = 0
        self.played = 0
        self.resyncs = 0
        self.held = 0
        self.skipped = 0
        """Missing packets dropped without concealment because playout was behind (latency catch-up)."""
        self.with_next = 0
        """Concealed slots handed out with the packet after them (``Conceal.next_packet``) for FEC."""
        self._reset()

    def _reset(self) -> None:
        self._packets.clear()
        self._transits.clear()
        self._ssrc: int | None = None
        self._next_sequence = 0
        self._timestamp_reference = 0
        self._play_timestamp = 0
        self._started = False
        self._base_transit = 0.0
        self._playout_offset = 0.0
        self._conceal_run = 0
        self._last_put: tuple[int, int] | None = None
        self._puts_since_estimate = 0

    # -- observation -------------------------------------------------------------------------------------

    @property
    def target_delay(self) -> float:
        """Current playout delay beyond the fastest observed packet, in seconds."""
        return self._playout_offset - self._base_transit

    @property
    def frame_samples(self) -> int:
        return self._frame_samples

    def __len__(self) -> int:
        return len(self._packets)

    # -- input -------------------------------------------------------------------------------------------

    def put(self, packet: RtpPacket, arrival_time: float) -> PutResult:
        self.received += 1
        if self._ssrc is None:
            self._start_stream(packet, arrival_time)
            return PutResult.ACCEPTED
        if packet.ssrc != self._ssrc:
            return self._hold_or_resync(packet, arrival_time)
        distance = seq_diff(packet.sequence_number, self._next_sequence & 0xFFFF)
        if distance < 0:
            if not self._started and distance > -self._capacity // 2:
                # Reordered before playout began: start earlier instead of discarding it, and forget
                # what now falls beyond the window so the capacity bound still holds.
                self._next_sequence += distance
                limit = self._next_sequence + self._capacity
                for stale in [key for key in self._packets if key >= limit]:
                    del self._packets[stale]
            elif distance > -self._capacity:
                self.late += 1
                return PutResult.LATE
            else:
                return self._hold_or_resync(packet, arrival_time)
        elif distance >= self._capacity:
            return self._hold_or_resync(packet, arrival_time)
        extended_sequence = self._next_sequence + max(distance, 0)
        if extended_sequence in self._packets:
            self.duplicates += 1
            return PutResult.DUPLICATE
        extended_timestamp = self._timestamp_reference + ts_diff(
            packet.timestamp, self._timestamp_reference & 0xFFFFFFFF
        )
        transit = arrival_time - extended_timestamp / self._clock_rate
        if abs(transit - self._base_transit) > self._resync_threshold:
            # Same stream, but the timestamps jumped (sender restart, re-INVITE): start timing afresh.
            self.resyncs += 1
            self._reset()
            self._start_stream(packet, arrival_time)
            return PutResult.RESYNCED
        if self._started and extended_timestamp < self._play_timestamp:
            self.late += 1
            return PutResult.LATE
        self._store(packet, extended_sequence, extended_timestamp, transit)
        return PutResult.ACCEPTED

    def _start_stream(self, packet: RtpPacket, arrival_time: float) -> None:
        self._ssrc = packet.ssrc
        self._next_sequence = packet.sequence_number
        self._timestamp_reference = packet.timestamp
        transit = arrival_time - packet.timestamp / self._clock_rate
        self._base_transit = transit
        self._playout_offset = transit + self._initial_delay
        self._store(packet, packet.sequence_number, packet.timestamp, transit)

    def _hold_or_resync(self, packet: RtpPacket, arrival_time: float) -> PutResult:
        candidate = self._candidate
        if (
            candidate is not None
            and candidate.ssrc == packet.ssrc
            and packet.sequence_number == (candidate.sequence_number + 1) & 0xFFFF
        ):
            self._candidate = None
            self.resyncs += 1
            self._reset()
            self._start_stream(candidate, arrival_time)
            self.put(packet, arrival_time)
            self.received -= 1  # counted once already by the outer put
            return PutResult.RESYNCED
        self._candidate = packet
        self.held += 1
        return PutResult.HELD

    def _store(
        self, packet: RtpPacket, extended_sequence: int, extended_timestamp: int, transit: float
    ) -> None:
        self._packets[extended_sequence] = (packet, extended_timestamp)
        self._timestamp_reference = extended_timestamp
        last = self._last_put
        if last is not None and extended_sequence == last[0] + 1 and not packet.marker:
            delta = extended_timestamp - last[1]
            # A marker starts a talkspurt after silence; its timestamp gap is not the frame size.
            if 0 < delta <= self._clock_rate * 0.12:
                self._frame_samples = delta
        self._last_put = (extended_sequence, extended_timestamp)
        self._transits.append(transit)
        if transit < self._base_transit:
            self._base_transit = transit
        self._puts_since_estimate += 1
        if self._puts_since_estimate >= 16:
            self._estimate_delay()

    def _estimate_delay(self) -> None:
        self._puts_since_estimate = 0
        ordered = sorted(self._transits)
        base = ordered[0]
        spread = ordered[min(len(ordered) - 1, int(self._quantile * len(ordered)))] - base
        if (
            self._fec_reserve
            and self._last_loss is not None
            and self.received - self._last_loss <= self._window
        ):
            spread += self._frame_samples / self._clock_rate
        self._base_transit = base
        wanted = base + min(max(spread, self._min_delay), self._max_delay)
        if wanted >= self._playout_offset:
            # Later at once: a packet past its deadline is lost audio.
            self._playout_offset = wanted
        else:
            # Earlier only a little at a time, so playout never has to skip slots to catch up.
            step = 0.25 * self._frame_samples / self._clock_rate
            self._playout_offset = max(wanted, self._playout_offset - step)

    # -- output ------------------------------------------------------------------------------------------

    def _deadline(self, extended_timestamp: int) -> float:
        return extended_timestamp / self._clock_rate + self._playout_offset

    def _is_due(self, now: float, extended_timestamp: int) -> bool:
        return now >= self._deadline(extended_timestamp) - DUE_TOLERANCE

    def get(self, now: float) -> Frame | Conceal | None:
        packets = self._packets
        if not self._started:
            if not packets:
                return None
            self._next_sequence = min(packets)
            if not self._is_due(now, packets[self._next_sequence][1]):
                return None
            self._started = True
            return self._play(now)
        while True:
            entry = packets.get(self._next_sequence)
            if entry is not None:
                if entry[1] < self._play_timestamp:
                    # Its slot was already concealed while we waited for it.
                    del packets[self._next_sequence]
                    self._next_sequence += 1
                    self.late += 1
                    continue
                if now - self._deadline(entry[1]) > self._max_delay + DUE_TOLERANCE:
                    # Far behind (after an outage): playing stale audio would only add latency.
                    del packets[self._next_sequence]
                    self._next_sequence += 1
                    self.late += 1
                    continue
                if not self._is_due(now, entry[1]):
                    return None
                return self._play(now)
            if packets:
                lowest = min(packets)
                lowest_timestamp = packets[lowest][1]
                if (
                    lowest_timestamp <= self._play_timestamp
                    or now - self._deadline(lowest_timestamp)
                    > self._frame_samples / self._clock_rate + DUE_TOLERANCE
                ):
                    # The missing packets' slots were already concealed, or the next packet we hold is
                    # overdue: count the gap as lost and move on to it.
                    if lowest_timestamp > self._play_timestamp:
                        self.skipped += lowest - self._next_sequence
                    self.lost += lowest - self._next_sequence
                    self._last_loss = self.received
                    self._next_sequence = lowest
                    continue
                if not self._is_due(now, self._play_timestamp):
                    return None
                self.lost += 1
                self._last_loss = self.received
                self._next_sequence += 1
                return self._conceal(self._following(self._next_sequence))
            if self._conceal_run < self._max_conceal_frames and self._is_due(now, self._play_timestamp):
                # Nothing buffered: loss or silence, we cannot tell yet. Keep the sequence where it is so a
                # talkspurt resuming after DTX still plays; conceal a few frames, then go quiet.
                return self._conceal()
            return None

    def _play(self, now: float) -> Frame:
        extended_sequence = self._next_sequence
        packet, extended_timestamp = self._packets.pop(extended_sequence)
        self._next_sequence = extended_sequence + 1
        self._play_timestamp = extended_timestamp + self._frame_samples
        self._conceal_run = 0
        self.played += 1
        return Frame(packet, extended_sequence)

    def _following(self, extended_sequence: int) -> RtpPacket | None:
        """The buffered packet ``extended_sequence`` if it starts right after the slot about to be
        concealed (so its FEC covers that slot; not after a timestamp jump such as DTX)."""
        entry = self._packets.get(extended_sequence)
        if entry is None or entry[1] != self._play_timestamp + self._frame_samples:
            return None
        return entry[0]

    def _conceal(self, next_packet: RtpPacket | None = None) -> Conceal:
        timestamp = self._play_timestamp
        self._play_timestamp += self._frame_samples
        self._conceal_run += 1
        self.concealed += 1
        if next_packet is not None:
            self.with_next += 1
        return Conceal(timestamp & 0xFFFFFFFF, self._frame_samples, next_packet)

    def get_timer(self) -> float | None:
        """When ``get`` may next return something (for an event-driven decoder); None if never."""
        packets = self._packets
        if not self._started:
            return self._deadline(packets[min(packets)][1]) if packets else None
        entry = packets.get(self._next_sequence)
        if entry is not None:
            return self._deadline(max(entry[1], self._play_timestamp))
        if packets or self._conceal_run < self._max_conceal_frames:
            return self._deadline(self._play_timestamp)
        return None
