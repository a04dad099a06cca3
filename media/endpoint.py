"""One RTP/RTCP UDP endpoint of the media plane: receive (latching, stats, DTMF), send (one SSRC), RTCP.

The asyncio glue around the pure helpers: ``media.latching`` decides which packets count,
``media.stats`` keeps RFC 3550 statistics, ``media.dtmf`` turns telephone-events into digits,
``media.rtp.SequenceRewriter`` keeps the outgoing stream continuous whatever feeds it (a relayed leg, the
transcoder, a player, a DTMF digit). The plane owns timers: it calls :meth:`RtpEndpoint.housekeeping`
about once a second (media timeout, RTCP reports, DTMF receiver timeouts) and ticks local generators
every 20 ms through :class:`OutgoingStream`.

The receive path runs once per packet, so it reads only the 12-byte fixed header with one
``unpack_from`` and hands the raw datagram on; nothing in it may raise out of ``datagram_received``
(malformed input is counted and dropped, anything unexpected is counted and logged once).
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

from media.control import (
    Direction,
    DtmfReceived,
    MediaEvent,
    MediaTimeout,
    PayloadFormat,
    QualityReport,
    QualitySnapshot,
    StreamParams,
)
from media.dtmf import DtmfReceiver, DtmfSender
from media.latching import Address, Latch
from media.rtcp import (
    RtcpReceiverReport,
    RtcpSenderReport,
    build_receiver_report,
    parse_rtcp,
    serialize_rtcp,
)
from media.rtp import SequenceRewriter
from media.stats import CODEC_IMPAIRMENTS, PCMU_PLC, ReceiveStatistics, SendStatistics, estimate_mos

log = logging.getLogger(__name__)

_FIXED_HEADER = struct.Struct("!BBHII")
_SEQUENCE_TIMESTAMP_SSRC = struct.Struct("!HII")  # octets 2..11 of the fixed header
RTP_HEADER_SIZE = 12

Clock = Callable[[], float]
EmitEvent = Callable[[MediaEvent], None]
# (source endpoint, datagram, payload type, sequence, timestamp, ssrc, marker, now)
RtpSink = Callable[["RtpEndpoint", bytes, int, int, int, int, bool, float], None]


class MediaCounters:
    """Plane-wide totals as plain ints (exported at scrape time; no per-packet metrics call)."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "callback_errors",
        "dropped_latching",
        "dropped_malformed",
        "dropped_unroutable",
        "packets_in",
        "packets_out",
        "rtcp_in",
        "rtcp_out",
    )

    def __init__(self) -> None:
        self.packets_in = 0
        self.packets_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.dropped_latching = 0
        self.dropped_malformed = 0
        self.dropped_unroutable = 0
        self.callback_errors = 0
        self.rtcp_in = 0
        self.rtcp_out = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class _HeaderView:
    """A reusable object carrying what ``Latch.accept`` reads, so the hot path allocates nothing for it."""

    __slots__ = ("payload_type", "ssrc")

    def __init__(self) -> None:
        self.payload_type = 0
        self.ssrc = 0


def same_codec(a: PayloadFormat, b: PayloadFormat) -> bool:
    return a.encoding.lower() == b.encoding.lower() and a.clock_rate == b.clock_rate


class _StreamOwner(Protocol):
    """What an :class:`OutgoingStream` reads of its endpoint."""

    send_address: Address | None
    sends: bool
    closed: bool
    rtp_transport: asyncio.DatagramTransport | None

    def sendto(self, data: bytes | bytearray, address: Address) -> None: ...


class _Detached:
    """The owner a detached endpoint's stream is left with: it sends nowhere. Pointing the stream here
    instead of back at the endpoint leaves no endpoint <-> stream reference cycle for the garbage
    collector once the call has let go of both."""

    send_address: Address | None = None
    sends = False
    closed = True
    rtp_transport: asyncio.DatagramTransport | None = None

    def sendto(self, data: bytes | bytearray, address: Address) -> None:
        return None


_DETACHED = _Detached()


class OutgoingStream:
    """Everything an endpoint sends on its one SSRC, with continuous sequence numbers and timestamps.

    Relayed packets keep their source's timing through the rewriter. Locally generated packets (player,
    transcoder output, DTMF) come from one local source whose timestamps follow the clock; the rewriter
    sees it as one more source, so switching between relay and local generation stays continuous.
    While a local generator holds the stream (``local_owner`` set, or a digit being sent), relayed audio
    is dropped rather than interleaved.
    """

    __slots__ = (
        "_counters",
        "_dtmf",
        "_dtmf_format",
        "_local_last_time",
        "_local_sequence",
        "_local_ssrc",
        "_local_timestamp",
        "clock_rate",
        "endpoint",
        "local_owner",
        "rewriter",
        "send_stats",
        "ssrc",
        "suppressed",
    )

    def __init__(self, endpoint: RtpEndpoint, clock_rate: int, counters: MediaCounters) -> None:
        self.endpoint: _StreamOwner = endpoint
        self._counters = counters
        self.clock_rate = clock_rate
        self.ssrc = random.getrandbits(32)
        self.rewriter = SequenceRewriter(
            self.ssrc,
            clock_rate,
            initial_sequence=random.getrandbits(16),
            initial_timestamp=random.getrandbits(32),
        )
        self.send_stats = SendStatistics(self.ssrc, clock_rate)
        self._local_ssrc = random.getrandbits(32)
        self._local_sequence = random.getrandbits(16)
        self._local_timestamp = 0
        self._local_last_time: float | None = None
        self._dtmf: DtmfSender | None = None
        self._dtmf_format: PayloadFormat | None = None
        self.local_owner: object | None = None
        """The player or transcoder currently feeding this stream, if any."""
        self.suppressed = 0

    # -- relayed packets (hot path) ------------------------------------------------------------------

    def forward(
        self,
        data: bytes,
        payload_type: int,
        sequence: int,
        timestamp: int,
        ssrc: int,
        marker: bool,
        now: float,
    ) -> None:
        """Send a packet of another stream under our SSRC/sequence/timestamp, payload untouched."""
        endpoint = self.endpoint
        address = endpoint.send_address
        dtmf = self._dtmf
        if (
            address is None
            or not endpoint.sends
            or self.local_owner is not None
            or (dtmf is not None and dtmf.busy)
        ):
            self.suppressed += 1
            return
        transport = endpoint.rtp_transport
        if transport is None or endpoint.closed:
            return
        out = bytearray(data)
        out_timestamp = self.rewriter.rewrite_into(out, sequence, timestamp, ssrc, marker, payload_type, now)
        if out_timestamp < 0:
            return
        size = len(out)
        counters = self._counters
        counters.packets_out += 1
        counters.bytes_out += size
        transport.sendto(out, address)
        self.send_stats.on_sent(size - RTP_HEADER_SIZE, out_timestamp, now)

    def _dtmf_busy(self) -> bool:
        dtmf = self._dtmf
        return dtmf is not None and dtmf.busy

    # -- locally generated packets --------------------------------------------------------------------

    def _local_timing(self, samples: int, now: float) -> tuple[int, bool]:
        """The local source's timestamp for a frame of ``samples`` sent at ``now``, and the marker.

        Consecutive frames advance by exactly ``samples``; after a pause the timestamp jumps by the time
        elapsed (and the marker starts a new talkspurt), so the far end's playout stays in step.
        """
        last = self._local_last_time
        if last is None:
            self._local_timestamp = random.getrandbits(32)
            marker = True
        else:
            elapsed = round((now - last) * self.clock_rate)
            if elapsed > 3 * samples:
                self._local_timestamp = (self._local_timestamp + elapsed) & 0xFFFFFFFF
                marker = True
            else:
                self._local_timestamp = (self._local_timestamp + samples) & 0xFFFFFFFF
                marker = False
        self._local_last_time = now
        return self._local_timestamp, marker

    def send_local(self, payload: bytes, payload_type: int, samples: int, now: float) -> bool:
        """Send one locally generated audio frame; False when it was not sent (hold, no address, DTMF)."""
        timestamp, marker = self._local_timing(samples, now)
        if self._dtmf_busy():
            return False
        return self._send_generated(payload, payload_type, timestamp, marker, now)

    def _send_generated(
        self, payload: bytes, payload_type: int, timestamp: int, marker: bool, now: float
    ) -> bool:
        endpoint = self.endpoint
        address = endpoint.send_address
        if address is None or not endpoint.sends:
            self.suppressed += 1
            return False
        self._local_sequence = (self._local_sequence + 1) & 0xFFFF
        header = self.rewriter.rewrite(self._local_sequence, timestamp, self._local_ssrc, marker, now)
        if header is None:
            return False
        out_sequence, out_timestamp, out_ssrc, out_marker = header
        data = _FIXED_HEADER.pack(
            0x80, (0x80 if out_marker else 0) | payload_type, out_sequence, out_timestamp, out_ssrc
        )
        endpoint.sendto(data + payload, address)
        self.send_stats.on_sent(len(payload), out_timestamp, now)
        return True

    def send_dtmf(self, digit: str, duration: float, telephone_event: PayloadFormat, now: float) -> None:
        """Queue one RFC 4733 digit; its packets leave on ``poll_dtmf`` (every clock tick)."""
        if self._dtmf is None or self._dtmf_format != telephone_event:
            self._dtmf = DtmfSender(telephone_event.clock_rate)
            self._dtmf_format = telephone_event
        # The event starts at the local source's "now" so it lines up with local audio around it.
        if self._local_last_time is None:
            start_timestamp, _ = self._local_timing(round(0.02 * telephone_event.clock_rate), now)
        else:
            elapsed = round((now - self._local_last_time) * self.clock_rate)
            start_timestamp = (self._local_timestamp + max(elapsed, 0)) & 0xFFFFFFFF
        self._dtmf.send(digit, now, start_timestamp, duration)

    @property
    def has_pending_dtmf(self) -> bool:
        return self._dtmf_busy()

    def poll_dtmf(self, now: float) -> None:
        dtmf = self._dtmf
        telephone_event = self._dtmf_format
        if dtmf is None or telephone_event is None:
            return
        for packet in dtmf.poll(now):
            self._send_generated(
                packet.payload, telephone_event.payload_type, packet.timestamp, packet.marker, now
            )
            if packet.event.end:
                # Local audio resumes after the event: move the local clock past the digit's duration.
                end = (packet.timestamp + packet.event.duration) & 0xFFFFFFFF
                if ((end - self._local_timestamp) & 0xFFFFFFFF) < 0x80000000:
                    self._local_timestamp = end
                self._local_last_time = now


@dataclass(frozen=True, slots=True)
class EndpointSettings:
    media_timeout: float = 30.0
    """Seconds without RTP (while sendrecv) before a MediaTimeout; 0 disables."""
    rtcp_interval: float = 5.0
    quality_interval: float = 0.0
    """Seconds between periodic QualityReport events; 0 disables (one is always sent on destroy)."""
    cname: str = "uc-edge"


class RtpEndpoint(asyncio.DatagramProtocol):
    """The RTP socket's protocol and the endpoint's state (RTCP has its own small protocol below)."""

    def __init__(
        self,
        endpoint_id: str,
        *,
        call_id: str,
        leg_id: str,
        address: str,
        rtp_port: int,
        counters: MediaCounters,
        emit: EmitEvent,
        clock: Clock,
        wallclock: Clock,
        settings: EndpointSettings,
    ) -> None:
        self.endpoint_id = endpoint_id
        self.call_id = call_id
        self.leg_id = leg_id
        self.address = address
        self.rtp_port = rtp_port
        self.rtcp_port = rtp_port + 1
        self._counters = counters
        self._emit = emit
        self._clock = clock
        self._wallclock = wallclock
        self._settings = settings
        self.rtp_transport: asyncio.DatagramTransport | None = None
        self.rtcp_transport: asyncio.DatagramTransport | None = None
        self.params: StreamParams | None = None
        self.sends = False
        self._receives = False
        self._formats: dict[int, PayloadFormat] = {}
        self._telephone_event_pt = -1
        self._latch = Latch(())
        self._header_view = _HeaderView()
        self._signalled_address: Address | None = None
        self.send_address: Address | None = None
        self._rtcp_remote: Address | None = None
        self.sink: RtpSink | None = None
        """Where accepted RTP goes next (relay, echo, transcoder); None drops it after accounting."""
        self.on_digit: Callable[[str, float], None] | None = None
        """Called once per received digit (after the DtmfReceived event), e.g. to regenerate it."""
        self.output = OutgoingStream(self, 8000, counters)
        self._stats: ReceiveStatistics | None = None
        self._prior_received = 0
        self._prior_expected = 0
        self._dtmf_receiver: DtmfReceiver | None = None
        self.last_received: float | None = None
        now = clock()
        self._timeout_reference = now
        self._timeout_fired = False
        self._next_rtcp = now + settings.rtcp_interval * random.uniform(0.5, 1.5)
        self._next_quality = now + settings.quality_interval if settings.quality_interval > 0 else None
        self.malformed = 0
        self.foreign_dropped = 0
        self.invalid_dropped = 0
        self.closed = False
        self._error_logged = False

    # -- lifecycle ------------------------------------------------------------------------------------

    def configure(self, params: StreamParams) -> bool:
        """Apply a (re-)negotiated stream; True when the peer's source changed (new address or formats)."""
        previous = self.params
        self.params = params
        formats = {fmt.payload_type: fmt for fmt in params.formats}
        formats[params.send_format.payload_type] = params.send_format
        if params.telephone_event is not None:
            formats[params.telephone_event.payload_type] = params.telephone_event
            self._telephone_event_pt = params.telephone_event.payload_type
            self._dtmf_receiver = DtmfReceiver(params.telephone_event.clock_rate)
        else:
            self._telephone_event_pt = -1
            self._dtmf_receiver = None
        signalled = (
            (params.remote_address, params.remote_port)
            if params.remote_address and params.remote_port
            else None
        )
        source_changed = (
            previous is None or signalled != self._signalled_address or set(formats) != set(self._formats)
        )
        self._formats = formats
        if source_changed:
            # A new far end (or codec set): learn its source afresh.
            self._latch = Latch(formats)
            self._rtcp_remote = None
            self.send_address = signalled
        self._signalled_address = signalled
        if self.output.clock_rate != params.send_format.clock_rate:
            # Another clock rate is another RTP stream: start a new SSRC rather than bend the old one.
            self.output = OutgoingStream(self, params.send_format.clock_rate, self._counters)
        self.sends = params.direction.sends
        self._receives = params.direction.receives
        self._timeout_reference = self._clock()
        self._timeout_fired = False
        return source_changed

    @property
    def timeout_applies(self) -> bool:
        """Media timeout is watched on sendrecv streams only: hold and inactive streams may be silent."""
        params = self.params
        return (
            params is not None and params.direction is Direction.SENDRECV and self._settings.media_timeout > 0
        )

    def attach(self, rtp: asyncio.DatagramTransport, rtcp: asyncio.DatagramTransport) -> None:
        """Send through these (pooled) transports; the caller makes this endpoint their protocol."""
        self.rtp_transport = rtp
        self.rtcp_transport = rtcp

    def detach(self) -> None:
        """Stop for good without closing the sockets (they go back to the pool for another call).

        Whatever still holds this endpoint (a stale sink, a late codec result) can no longer send: the
        transports are forgotten, so a pooled pair reused by a new call is never written by the old one.
        """
        self.closed = True
        self.sink = None
        self.on_digit = None
        self.rtp_transport = None
        self.rtcp_transport = None
        self.output.endpoint = _DETACHED

    def close(self) -> None:
        """Stop for good and close the sockets (endpoints that own their transports)."""
        transports = (self.rtp_transport, self.rtcp_transport)
        self.detach()
        for transport in transports:
            if transport is not None:
                transport.close()

    # -- asyncio protocol -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not every loop's datagram transport subclasses DatagramTransport (3.11 selector loop).
        self.rtp_transport = cast(asyncio.DatagramTransport, transport)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a phone that went away: the timeout will notice; nothing to do.
        log.debug("RTP socket error on %s: %s", self.endpoint_id, exc)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        counters = self._counters
        counters.packets_in += 1
        counters.bytes_in += len(data)
        try:
            if len(data) < RTP_HEADER_SIZE or data[0] & 0xC0 != 0x80:
                counters.dropped_malformed += 1
                self.malformed += 1
                return
            second = data[1]
            if 192 <= second <= 223:
                # RFC 5761: an RTCP packet type in the second octet, on the RTP port (rtcp-mux).
                self.rtcp_received(data, addr)
                return
            sequence, timestamp, ssrc = _SEQUENCE_TIMESTAMP_SSRC.unpack_from(data, 2)
            payload_type = second & 0x7F
            now = self._clock()
            view = self._header_view
            view.ssrc = ssrc
            view.payload_type = payload_type
            latch = self._latch
            if not latch.accept(addr, view, now):
                counters.dropped_latching += 1
                if latch.address is not None and addr != latch.address:
                    self.foreign_dropped += 1
                else:
                    self.invalid_dropped += 1
                return
            self.last_received = now
            self.send_address = latch.address or addr
            stats = self._stats
            if stats is None or stats.ssrc != ssrc:
                stats = self._new_source(ssrc)
            stats.update(sequence, timestamp, now)
            if payload_type == self._telephone_event_pt:
                self._telephone_event(data, timestamp, now)
            sink = self.sink
            if sink is not None and self._receives:
                sink(self, data, payload_type, sequence, timestamp, ssrc, second >= 0x80, now)
        except Exception:  # a bug must not kill the socket; count it, log the first one
            counters.callback_errors += 1
            if not self._error_logged:
                self._error_logged = True
                log.exception("RTP packet handling failed on %s", self.endpoint_id)

    def sendto(self, data: bytes | bytearray, address: Address) -> None:
        transport = self.rtp_transport
        if transport is None or self.closed:
            return
        counters = self._counters
        counters.packets_out += 1
        counters.bytes_out += len(data)
        transport.sendto(data, address)

    # -- receive helpers ------------------------------------------------------------------------------

    def incoming_format(self, payload_type: int) -> PayloadFormat | None:
        return self._formats.get(payload_type)

    def _new_source(self, ssrc: int) -> ReceiveStatistics:
        old = self._stats
        if old is not None:
            self._prior_received += old.received
            self._prior_expected += old.expected
        params = self.params
        clock_rate = params.send_format.clock_rate if params is not None else 8000
        self._stats = ReceiveStatistics(ssrc, clock_rate, probation=0)
        return self._stats

    def _telephone_event(self, data: bytes, timestamp: int, now: float) -> None:
        receiver = self._dtmf_receiver
        if receiver is None:
            return
        try:
            digits = receiver.receive(_payload_of(data), timestamp, now)
        except ValueError:
            self._counters.dropped_malformed += 1
            self.malformed += 1
            return
        for digit in digits:
            self._report_digit(digit.digit, digit.duration or 0.0)

    def _report_digit(self, digit: str, duration: float) -> None:
        self._emit(DtmfReceived(self.endpoint_id, digit, round(duration * 1000), "rfc4733"))
        hook = self.on_digit
        if hook is not None:
            hook(digit, duration)

    # -- RTCP -------------------------------------------------------------------------------------------

    def rtcp_received(self, data: bytes, addr: Address) -> None:
        counters = self._counters
        counters.rtcp_in += 1
        if not self._latch.accept_rtcp(addr):
            counters.dropped_latching += 1
            self.foreign_dropped += 1
            return
        try:
            packets = parse_rtcp(data)
        except ValueError:
            counters.dropped_malformed += 1
            self.malformed += 1
            return
        self._rtcp_remote = addr
        now = self._clock()
        output = self.output
        for packet in packets:
            if isinstance(packet, RtcpSenderReport):
                stats = self._stats
                if stats is not None and packet.ssrc == stats.ssrc:
                    stats.on_sender_report(packet.ntp_timestamp, now)
            if isinstance(packet, RtcpSenderReport | RtcpReceiverReport):
                for block in packet.reports:
                    output.send_stats.on_report_block(block, now)

    def _send_rtcp(self, now: float) -> None:
        params = self.params
        if params is None:
            return
        stats = self._stats
        blocks = [stats.report_block(now)] if stats is not None and stats.received else []
        output = self.output
        if output.send_stats.packet_count:
            packets = output.send_stats.sender_report(now, self._wallclock(), blocks, self._settings.cname)
        else:
            packets = build_receiver_report(output.ssrc, blocks, self._settings.cname)
        data = serialize_rtcp(packets)
        if params.rtcp_mux:
            if self.send_address is not None and self.rtp_transport is not None:
                self._counters.rtcp_out += 1
                self.rtp_transport.sendto(data, self.send_address)
            return
        target = self._rtcp_remote
        if target is None and self.send_address is not None:
            target = (self.send_address[0], self.send_address[1] + 1)
        if target is not None and self.rtcp_transport is not None:
            self._counters.rtcp_out += 1
            self.rtcp_transport.sendto(data, target)

    # -- timers -----------------------------------------------------------------------------------------

    def housekeeping(self, now: float) -> list[MediaEvent]:
        """Run the slow timers; returns events the plane should publish (timeouts, periodic quality)."""
        events: list[MediaEvent] = []
        receiver = self._dtmf_receiver
        if receiver is not None:
            for digit in receiver.handle_timer(now):
                self._report_digit(digit.digit, digit.duration or 0.0)
        last = self.last_received
        if last is not None and last > self._timeout_reference:
            self._timeout_reference = last
            self._timeout_fired = False
        if self.timeout_applies and not self._timeout_fired:
            silent = now - self._timeout_reference
            if silent >= self._settings.media_timeout:
                self._timeout_fired = True
                events.append(MediaTimeout(self.endpoint_id, round(silent, 3)))
        if now >= self._next_rtcp:
            self._next_rtcp = now + self._settings.rtcp_interval * random.uniform(0.5, 1.5)
            self._send_rtcp(now)
        if self._next_quality is not None and now >= self._next_quality:
            self._next_quality = now + self._settings.quality_interval
            events.append(QualityReport(self.endpoint_id, self.quality()))
        return events

    # -- quality ---------------------------------------------------------------------------------------

    def quality(self, jitter_buffer_delay: float = 0.0) -> QualitySnapshot:
        stats = self._stats
        received = self._prior_received + (stats.received if stats is not None else 0)
        expected = self._prior_expected + (stats.expected if stats is not None else 0)
        lost = max(0, expected - received)
        loss_percent = 100.0 * lost / expected if expected > 0 else 0.0
        jitter_ms = stats.jitter_ms if stats is not None else 0.0
        rtt = self.output.send_stats.rtt
        rtt_ms = None if rtt is None else rtt * 1000.0
        codec = self.params.send_format.encoding if self.params is not None else ""
        mos = None
        if received:
            impairment = CODEC_IMPAIRMENTS.get(codec.upper(), PCMU_PLC)
            delay_ms = (rtt_ms or 0.0) / 2.0 + jitter_buffer_delay * 1000.0 + impairment.frame_delay_ms
            mos = round(estimate_mos(impairment, loss_percent, delay_ms), 3)
        return QualitySnapshot(
            packets_received=received,
            packets_sent=self.output.send_stats.packet_count,
            packets_lost=lost,
            loss_percent=round(loss_percent, 3),
            jitter_ms=round(jitter_ms, 3),
            rtt_ms=None if rtt_ms is None else round(rtt_ms, 3),
            mos=mos,
            codec=codec,
            extra={
                "dropped_foreign": float(self.foreign_dropped),
                "dropped_invalid": float(self.invalid_dropped),
                "malformed": float(self.malformed),
            },
        )


def _payload_of(data: bytes) -> bytes:
    """The payload of a validated RTP datagram (skipping CSRCs, extension, padding)."""
    first = data[0]
    offset = RTP_HEADER_SIZE + 4 * (first & 0x0F)
    end = len(data)
    if first & 0x10:
        if offset + 4 > end:
            raise ValueError("RTP extension header is truncated")
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    if first & 0x20:
        end -= data[-1]
    if offset > end:
        raise ValueError("RTP packet is truncated")
    return data[offset:end]


payload_of = _payload_of


class RtcpProtocol(asyncio.DatagramProtocol):
    """The RTCP socket (RTP port + 1) when rtcp-mux is not in use."""

    def __init__(self, endpoint: RtpEndpoint) -> None:
        self._endpoint = endpoint

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._endpoint.rtcp_transport = cast(asyncio.DatagramTransport, transport)

    def error_received(self, exc: Exception) -> None:
        log.debug("RTCP socket error on %s: %s", self._endpoint.endpoint_id, exc)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        endpoint = self._endpoint
        try:
            if len(data) < 8 or data[0] & 0xC0 != 0x80:
                endpoint._counters.rtcp_in += 1
                endpoint._counters.dropped_malformed += 1
                endpoint.malformed += 1
                return
            endpoint.rtcp_received(data, addr)
        except Exception:
            endpoint._counters.callback_errors += 1
            log.exception("RTCP packet handling failed on %s", endpoint.endpoint_id)
