"""Per-stream call quality: RFC 3550 receive statistics, RTT from reports, and an E-model MOS estimate.

- ``ReceiveStatistics`` follows RFC 3550 appendix A.1 (sequence validation with probation, extended
  highest sequence), A.3 (cumulative and interval fraction lost) and A.8 (interarrival jitter).
- ``SendStatistics`` counts what we send and remembers the sender reports it built, so the LSR/DLSR in a
  reception report about our stream gives the round-trip time (RFC 3550 §6.4.1) on our own clock.
- ``estimate_mos`` is the ITU-T G.107 E-model reduced to R = 93.2 - Idd(Ta) - Ie,eff(codec, loss), with
  MOS from R per G.107 Annex B.

Pure: every function that needs time takes ``now`` (a monotonic clock) or ``wallclock`` (Unix seconds).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass

from media.rtcp import ReportBlock, RtcpPacket, build_sender_report, ntp_from_unix, ntp_middle32

SEQUENCE_MODULO = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2


class ReceiveStatistics:
    """Reception state of one remote source (RFC 3550 A.1, A.3, A.8)."""

    __slots__ = (
        "_bad_sequence",
        "_cycles",
        "_expected_prior",
        "_jitter",
        "_last_sr_time",
        "_last_transit",
        "_max_sequence",
        "_probation",
        "_received_prior",
        "base_sequence",
        "clock_rate",
        "duplicates_or_reordered",
        "last_arrival",
        "last_sr_compact",
        "received",
        "ssrc",
    )

    def __init__(self, ssrc: int, clock_rate: int, *, probation: int = MIN_SEQUENTIAL) -> None:
        """``probation``: sequential packets needed before a source counts (RFC 3550 A.1); 0 trusts it."""
        if clock_rate <= 0:
            raise ValueError("clock rate must be positive")
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self._probation = probation
        self._max_sequence: int | None = None
        self._bad_sequence = SEQUENCE_MODULO + 1
        self._cycles = 0
        self.base_sequence = 0
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self.duplicates_or_reordered = 0
        self._jitter = 0.0
        self._last_transit: float | None = None
        self.last_arrival: float | None = None
        self.last_sr_compact = 0
        self._last_sr_time: float | None = None

    # -- RFC 3550 A.1 ------------------------------------------------------------------------------------

    def _init_sequence(self, sequence_number: int) -> None:
        self.base_sequence = sequence_number
        self._max_sequence = sequence_number
        self._bad_sequence = SEQUENCE_MODULO + 1
        self._cycles = 0
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0

    def update(self, sequence_number: int, timestamp: int, arrival_time: float) -> bool:
        """Account one packet; False when it is not (yet) counted (probation, or a big jump)."""
        max_sequence = self._max_sequence
        if max_sequence is not None and not self._probation:
            delta = (sequence_number - max_sequence) & 0xFFFF
            if 0 < delta < MAX_DROPOUT:
                # The common case, in order (perhaps after a gap), with A.8 inline: once per packet.
                if sequence_number < max_sequence:
                    self._cycles += SEQUENCE_MODULO
                self._max_sequence = sequence_number
                self.received += 1
                transit = arrival_time * self.clock_rate - timestamp
                last = self._last_transit
                self._last_transit = transit
                self.last_arrival = arrival_time
                if last is not None:
                    d = transit - last
                    if d > 1 << 31:
                        d -= 1 << 32
                    elif d < -(1 << 31):
                        d += 1 << 32
                    self._jitter += (abs(d) - self._jitter) / 16.0
                return True
        if self._max_sequence is None:
            self._init_sequence(sequence_number)
            if self._probation:
                self._max_sequence = (sequence_number - 1) & 0xFFFF
            else:
                self.received = 1
                self._update_jitter(timestamp, arrival_time)
                return True
        max_sequence = self._max_sequence
        assert max_sequence is not None
        delta = (sequence_number - max_sequence) & 0xFFFF
        if self._probation:
            if sequence_number == (max_sequence + 1) & 0xFFFF:
                self._probation -= 1
                self._max_sequence = sequence_number
                if self._probation == 0:
                    self._init_sequence(sequence_number)
                    self.received += 1
                    self._update_jitter(timestamp, arrival_time)
                    return True
            else:
                self._probation = MIN_SEQUENTIAL - 1
                self._max_sequence = sequence_number
            self._update_jitter(timestamp, arrival_time)
            return False
        if delta == 0:
            self.duplicates_or_reordered += 1
        elif delta < MAX_DROPOUT:
            if sequence_number < max_sequence:
                self._cycles += SEQUENCE_MODULO
            self._max_sequence = sequence_number
        elif delta <= SEQUENCE_MODULO - MAX_MISORDER:
            if sequence_number == self._bad_sequence:
                # Two sequential packets after a big jump: the source restarted; resync (A.1).
                self._init_sequence(sequence_number)
                self._last_transit = None
            else:
                self._bad_sequence = (sequence_number + 1) & 0xFFFF
                return False
        else:
            self.duplicates_or_reordered += 1
        self.received += 1
        self._update_jitter(timestamp, arrival_time)
        return True

    # -- RFC 3550 A.8 ------------------------------------------------------------------------------------

    def _update_jitter(self, timestamp: int, arrival_time: float) -> None:
        transit = arrival_time * self.clock_rate - timestamp
        last = self._last_transit
        self._last_transit = transit
        self.last_arrival = arrival_time
        if last is None:
            return
        d = transit - last
        # Timestamps wrap at 2**32; bring the difference back to the nearest representative.
        if d > 1 << 31:
            d -= 1 << 32
        elif d < -(1 << 31):
            d += 1 << 32
        self._jitter += (abs(d) - self._jitter) / 16.0

    @property
    def jitter(self) -> float:
        """Interarrival jitter in timestamp units."""
        return self._jitter

    @property
    def jitter_ms(self) -> float:
        return 1000.0 * self._jitter / self.clock_rate

    # -- RFC 3550 A.3 ------------------------------------------------------------------------------------

    @property
    def extended_highest_sequence(self) -> int:
        if self._max_sequence is None:
            return 0
        return self._cycles + self._max_sequence

    @property
    def expected(self) -> int:
        if self._max_sequence is None or self.received == 0:
            return 0
        return self.extended_highest_sequence - self.base_sequence + 1

    @property
    def cumulative_lost(self) -> int:
        """Expected minus received; negative when duplicates outnumber losses (RFC 3550 §6.4.1)."""
        return self.expected - self.received if self.received else 0

    @property
    def loss_percent(self) -> float:
        expected = self.expected
        if expected <= 0:
            return 0.0
        return max(0.0, 100.0 * self.cumulative_lost / expected)

    def on_sender_report(self, ntp_timestamp: int, now: float) -> None:
        """Remember the peer's last SR for the LSR/DLSR of our next report block."""
        self.last_sr_compact = ntp_middle32(ntp_timestamp)
        self._last_sr_time = now

    def report_block(self, now: float) -> ReportBlock:
        """The reception report for the next RR/SR; advances the fraction-lost interval."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        lost = max(-(1 << 23), min((1 << 23) - 1, self.cumulative_lost))
        dlsr = 0
        if self._last_sr_time is not None:
            dlsr = min(0xFFFFFFFF, max(0, int((now - self._last_sr_time) * 65536)))
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            packets_lost=lost,
            highest_sequence=self.extended_highest_sequence & 0xFFFFFFFF,
            jitter=min(0xFFFFFFFF, int(self._jitter)),
            lsr=self.last_sr_compact,
            dlsr=dlsr,
        )


def rtt_from_compact(arrival_compact: int, lsr: int, dlsr: int) -> float | None:
    """RFC 3550 §6.4.1: RTT = A - LSR - DLSR, all in compact NTP units (1/65536 s); None without an SR."""
    if lsr == 0:
        return None
    return ((arrival_compact - lsr - dlsr) & 0xFFFFFFFF) / 65536.0


class SendStatistics:
    """What we sent on one SSRC, for sender reports, plus RTT from the reports peers send back."""

    __slots__ = (
        "_clock_rate",
        "_last_rtp_timestamp",
        "_last_sent_time",
        "_sent_reports",
        "octet_count",
        "packet_count",
        "rtt",
        "ssrc",
    )

    SENT_REPORTS_KEPT = 16

    def __init__(self, ssrc: int, clock_rate: int) -> None:
        if clock_rate <= 0:
            raise ValueError("clock rate must be positive")
        self.ssrc = ssrc
        self._clock_rate = clock_rate
        self.packet_count = 0
        self.octet_count = 0
        self._last_rtp_timestamp: int | None = None
        self._last_sent_time = 0.0
        self._sent_reports: OrderedDict[int, float] = OrderedDict()
        self.rtt: float | None = None
        """Latest round-trip time in seconds, None until a report referencing our SR arrives."""

    def on_sent(self, payload_size: int, rtp_timestamp: int, now: float) -> None:
        self.packet_count += 1
        self.octet_count += payload_size
        self._last_rtp_timestamp = rtp_timestamp
        self._last_sent_time = now

    def sender_report(
        self,
        now: float,
        wallclock: float,
        blocks: list[ReportBlock] | None = None,
        cname: bytes | str | None = None,
    ) -> list[RtcpPacket]:
        """Build a compound SR and remember when it left (``now``) to compute RTT later."""
        rtp_timestamp = 0
        if self._last_rtp_timestamp is not None:
            # The SR's RTP timestamp matches its NTP time, extrapolated from the last packet sent.
            elapsed = round((now - self._last_sent_time) * self._clock_rate)
            rtp_timestamp = (self._last_rtp_timestamp + elapsed) & 0xFFFFFFFF
        packets = build_sender_report(
            self.ssrc,
            wallclock=wallclock,
            rtp_timestamp=rtp_timestamp,
            packet_count=self.packet_count,
            octet_count=self.octet_count,
            blocks=blocks or (),
            cname=cname,
        )
        self._sent_reports[ntp_middle32(ntp_from_unix(wallclock))] = now
        while len(self._sent_reports) > self.SENT_REPORTS_KEPT:
            self._sent_reports.popitem(last=False)
        return packets

    def on_report_block(self, block: ReportBlock, now: float) -> float | None:
        """Update ``rtt`` from a report block about our SSRC; returns the new RTT or None."""
        if block.ssrc != self.ssrc or block.lsr == 0:
            return None
        sent = self._sent_reports.get(block.lsr)
        if sent is None:
            return None
        rtt = now - sent - block.dlsr / 65536.0
        self.rtt = max(0.0, rtt)
        return self.rtt


# --- E-model (ITU-T G.107) -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodecImpairment:
    """E-model codec parameters: equipment impairment Ie and packet-loss robustness Bpl (G.113)."""

    name: str
    ie: float
    bpl: float
    frame_delay_ms: float
    """Packetisation plus algorithmic look-ahead, part of the mouth-to-ear delay."""


PCMU = CodecImpairment("PCMU", ie=0.0, bpl=4.3, frame_delay_ms=20.0)
PCMU_PLC = CodecImpairment("PCMU+PLC", ie=0.0, bpl=25.1, frame_delay_ms=20.0)
PCMA = CodecImpairment("PCMA", ie=0.0, bpl=4.3, frame_delay_ms=20.0)
PCMA_PLC = CodecImpairment("PCMA+PLC", ie=0.0, bpl=25.1, frame_delay_ms=20.0)
OPUS = CodecImpairment("opus", ie=5.0, bpl=30.0, frame_delay_ms=26.5)
"""Opus has no G.113 entry. Our estimate on the narrowband R scale: Ie 5 (near-transparent at the 16-32
kbit/s voice rates we negotiate, slightly worse than G.711 at the low end), Bpl 30 (its built-in PLC and
in-band FEC hold up better than G.711 with Appendix I PLC, Bpl 25.1). Frame delay: 20 ms packets plus
6.5 ms look-ahead."""

CODEC_IMPAIRMENTS = {"PCMU": PCMU_PLC, "PCMA": PCMA_PLC, "OPUS": OPUS}
"""By MIME subtype (upper case) for our decoding paths, which all run PLC."""

R_DEFAULT = 93.2
"""G.107 R with every parameter at its default: the best a narrowband call can score."""


def delay_impairment(one_way_delay_ms: float) -> float:
    """G.107 Idd for absolute one-way delay Ta (ms), assuming perfect echo control (Idte, Idle ≈ 0)."""
    if one_way_delay_ms <= 100.0:
        return 0.0
    x = math.log2(one_way_delay_ms / 100.0)
    sixth = 1.0 / 6.0
    return 25.0 * (math.pow(1.0 + x**6, sixth) - 3.0 * math.pow(1.0 + (x / 3.0) ** 6, sixth) + 2.0)


def effective_equipment_impairment(
    codec: CodecImpairment, loss_percent: float, burst_ratio: float = 1.0
) -> float:
    """G.107 Ie,eff = Ie + (95 - Ie) · Ppl / (Ppl / BurstR + Bpl)."""
    loss = min(100.0, max(0.0, loss_percent))
    return codec.ie + (95.0 - codec.ie) * loss / (loss / burst_ratio + codec.bpl)


def r_to_mos(r: float) -> float:
    """G.107 Annex B (B-4)."""
    if r <= 0.0:
        return 1.0
    if r >= 100.0:
        return 4.5
    return 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6


def r_factor(codec: CodecImpairment, loss_percent: float, one_way_delay_ms: float) -> float:
    return (
        R_DEFAULT - delay_impairment(one_way_delay_ms) - effective_equipment_impairment(codec, loss_percent)
    )


def estimate_mos(codec: CodecImpairment, loss_percent: float, one_way_delay_ms: float) -> float:
    return r_to_mos(r_factor(codec, loss_percent, one_way_delay_ms))


@dataclass(frozen=True, slots=True)
class QualitySnapshot:
    """Quality of one received stream at a moment, for metrics and the end-of-leg record."""

    ssrc: int
    packets_received: int
    packets_expected: int
    packets_lost: int
    loss_percent: float
    jitter_ms: float
    rtt_ms: float | None
    one_way_delay_ms: float
    r_factor: float
    mos: float

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def quality_snapshot(
    receive: ReceiveStatistics,
    codec: CodecImpairment,
    *,
    rtt: float | None = None,
    jitter_buffer_delay: float = 0.0,
) -> QualitySnapshot:
    """Combine reception stats and RTT (seconds) into a snapshot with an E-model MOS.

    One-way delay is estimated as RTT/2 + jitter buffer delay + the codec's frame delay; without an RTT
    the network part counts as zero.
    """
    rtt_ms = None if rtt is None else rtt * 1000.0
    delay_ms = (rtt_ms or 0.0) / 2.0 + jitter_buffer_delay * 1000.0 + codec.frame_delay_ms
    loss = receive.loss_percent
    r = r_factor(codec, loss, delay_ms)
    return QualitySnapshot(
        ssrc=receive.ssrc,
        packets_received=receive.received,
        packets_expected=receive.expected,
        packets_lost=max(0, receive.cumulative_lost),
        loss_percent=loss,
        jitter_ms=receive.jitter_ms,
        rtt_ms=rtt_ms,
        one_way_delay_ms=delay_ms,
        r_factor=r,
        mos=r_to_mos(r),
    )
