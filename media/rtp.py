"""RTP packets (RFC 3550 §5.1), header extensions (RFC 8285), rtcp-mux demux (RFC 5761) and sequence helpers.

Pure and sans-IO: this module never reads a clock; callers pass ``now`` where time matters.
It runs once per packet on the relay path, so parsing uses one ``struct`` call for the fixed header,
``RtpPacket`` is a slots dataclass, and ``rewrite_header`` edits the 12 fixed bytes without a full parse.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
SEQUENCE_MODULO = 1 << 16
TIMESTAMP_MODULO = 1 << 32

ONE_BYTE_EXTENSION_PROFILE = 0xBEDE
"""RFC 8285 §4.2: one-byte header elements."""
TWO_BYTE_EXTENSION_PROFILE = 0x1000
"""RFC 8285 §4.3: two-byte header elements; the low 4 bits ("appbits") are application data."""

_FIXED_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")
_WORD = struct.Struct("!I")


class RtpHeader(NamedTuple):
    """The 12-byte fixed header, read without touching the payload (for demux, latching, relaying)."""

    marker: bool
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet. Mutable on purpose: the relay rewrites sequence/timestamp/SSRC in place."""

    payload_type: int = 0
    sequence_number: int = 0
    timestamp: int = 0
    ssrc: int = 0
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None
    """16-bit profile of the header extension; None when the X bit is clear."""
    extension: bytes = b""
    """Header extension body (a multiple of 4 bytes), kept verbatim; see ``parse_header_extensions``."""
    padding_size: int = 0
    """Number of padding octets (including the final count octet); 0 means the P bit is clear."""

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        size = len(data)
        if size < RTP_HEADER_SIZE:
            raise ValueError("RTP packet is too short")
        first, second, sequence_number, timestamp, ssrc = _FIXED_HEADER.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise ValueError("RTP version must be 2")
        offset = RTP_HEADER_SIZE
        end = size
        padding_size = 0
        if first & 0x20:
            padding_size = data[-1]
            if padding_size == 0 or padding_size > size - RTP_HEADER_SIZE:
                raise ValueError("RTP padding length is invalid")
            end -= padding_size
        csrc_count = first & 0x0F
        csrc: tuple[int, ...] = ()
        if csrc_count:
            csrc_end = offset + 4 * csrc_count
            if csrc_end > end:
                raise ValueError("RTP CSRC list is truncated")
            csrc = struct.unpack_from(f"!{csrc_count}I", data, offset)
            offset = csrc_end
        extension_profile: int | None = None
        extension = b""
        if first & 0x10:
            if offset + 4 > end:
                raise ValueError("RTP extension header is truncated")
            extension_profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
            offset += 4
            extension_end = offset + 4 * words
            if extension_end > end:
                raise ValueError("RTP extension length is invalid")
            extension = data[offset:extension_end]
            offset = extension_end
        return cls(
            second & 0x7F,
            sequence_number,
            timestamp,
            ssrc,
            data[offset:end],
            bool(second & 0x80),
            csrc,
            extension_profile,
            extension,
            padding_size,
        )

    def header(self) -> RtpHeader:
        return RtpHeader(self.marker, self.payload_type, self.sequence_number, self.timestamp, self.ssrc)

    def __bytes__(self) -> bytes:
        csrc = self.csrc
        extension_profile = self.extension_profile
        padding_size = self.padding_size
        if len(csrc) > 15:
            raise ValueError("RTP CSRC count must be at most 15")
        first = 0x80 | len(csrc)
        if padding_size:
            if not 0 < padding_size < 256:
                raise ValueError("RTP padding length is invalid")
            first |= 0x20
        if extension_profile is not None:
            first |= 0x10
        if not 0 <= self.payload_type <= 127:
            raise ValueError("RTP payload type must be in 0..127")
        try:
            data = _FIXED_HEADER.pack(
                first,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence_number,
                self.timestamp,
                self.ssrc,
            )
            if csrc:
                data += struct.pack(f"!{len(csrc)}I", *csrc)
            if extension_profile is not None:
                extension = self.extension
                if len(extension) % 4:
                    raise ValueError("RTP extension length must be a multiple of 4")
                data += _EXTENSION_HEADER.pack(extension_profile, len(extension) // 4) + extension
        except struct.error as exc:
            raise ValueError(f"RTP header field is out of range: {exc}") from None
        data += self.payload
        if padding_size:
            data += bytes(padding_size - 1) + bytes((padding_size,))
        return data


def parse_header(data: bytes) -> RtpHeader:
    """Read only the fixed header: the cheapest check that a datagram looks like RTP version 2."""
    if len(data) < RTP_HEADER_SIZE:
        raise ValueError("RTP packet is too short")
    first, second, sequence_number, timestamp, ssrc = _FIXED_HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise ValueError("RTP version must be 2")
    return RtpHeader(bool(second & 0x80), second & 0x7F, sequence_number, timestamp, ssrc)


def rewrite_header(data: bytes, sequence_number: int, timestamp: int, ssrc: int, marker: bool) -> bytes:
    """Copy ``data`` with new sequence/timestamp/SSRC/marker; CSRCs, extension and payload untouched.

    The relay's fast path: one copy and one ``pack_into``, no parse of the rest of the packet.
    The caller has already validated ``data`` (``parse_header``).
    """
    out = bytearray(data)
    out[1] = (out[1] & 0x7F) | (0x80 if marker else 0)
    _REWRITE.pack_into(out, 2, sequence_number, timestamp, ssrc)
    return bytes(out)


_REWRITE = struct.Struct("!HII")
_REWRITE_WITH_TYPE = struct.Struct("!BHII")  # octet 1 (marker + payload type), sequence, timestamp, SSRC


def is_rtcp(data: bytes) -> bool:
    """rtcp-mux demux (RFC 5761 §4): the second octet of RTCP is a packet type 192..223.

    Those values are RTP payload types 64..95 with the marker bit set, which RFC 5761 forbids for RTP.
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


def classify_datagram(data: bytes) -> str:
    """RFC 7983 first-octet demux on a shared port: "stun", "dtls", "rtcp", "rtp" or "unknown"."""
    if not data:
        return "unknown"
    first = data[0]
    if first <= 3:
        return "stun"
    if 20 <= first <= 63:
        return "dtls"
    if 128 <= first <= 191:
        return "rtcp" if is_rtcp(data) else "rtp"
    return "unknown"


# --- RFC 8285 header extension elements -------------------------------------------------------------


def parse_header_extensions(profile: int, data: bytes) -> list[tuple[int, bytes]]:
    """Split an RFC 8285 extension body into ``(id, value)`` elements, in order.

    One-byte form (profile 0xBEDE): ID 0 is padding, ID 15 stops parsing (§4.2).
    Two-byte form (profile 0x100X): a zero octet is padding (§4.3).
    """
    elements: list[tuple[int, bytes]] = []
    size = len(data)
    offset = 0
    if profile == ONE_BYTE_EXTENSION_PROFILE:
        while offset < size:
            octet = data[offset]
            if octet == 0:
                offset += 1
                continue
            element_id = octet >> 4
            if element_id == 15:
                break
            length = (octet & 0x0F) + 1
            offset += 1
            if offset + length > size:
                raise ValueError("RTP one-byte extension element is truncated")
            elements.append((element_id, data[offset : offset + length]))
            offset += length
        return elements
    if profile & 0xFFF0 == TWO_BYTE_EXTENSION_PROFILE:
        while offset < size:
            element_id = data[offset]
            if element_id == 0:
                offset += 1
                continue
            if offset + 2 > size:
                raise ValueError("RTP two-byte extension element is truncated")
            length = data[offset + 1]
            offset += 2
            if offset + length > size:
                raise ValueError("RTP two-byte extension element is truncated")
            elements.append((element_id, data[offset : offset + length]))
            offset += length
        return elements
    raise ValueError("RTP extension profile is not RFC 8285")


def serialize_header_extensions(elements: Iterable[tuple[int, bytes]]) -> tuple[int, bytes]:
    """Encode elements as ``(profile, body)``: one-byte form when every element allows it, else two-byte."""
    items = list(elements)
    one_byte = all(1 <= element_id <= 14 and 1 <= len(value) <= 16 for element_id, value in items)
    body = bytearray()
    if one_byte:
        profile = ONE_BYTE_EXTENSION_PROFILE
        for element_id, value in items:
            body.append((element_id << 4) | (len(value) - 1))
            body += value
    else:
        profile = TWO_BYTE_EXTENSION_PROFILE
        for element_id, value in items:
            if not 1 <= element_id <= 255:
                raise ValueError("RTP extension element id must be in 1..255")
            if len(value) > 255:
                raise ValueError("RTP extension element value is too long")
            body.append(element_id)
            body.append(len(value))
            body += value
    body += bytes(-len(body) % 4)
    return profile, bytes(body)


# --- sequence numbers and timestamps with wraparound ---------------------------------------------------


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between 16-bit sequence numbers, in -32768..32767."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def seq_lt(a: int, b: int) -> bool:
    """True when sequence number ``a`` comes before ``b`` (RFC 1982 serial arithmetic)."""
    return seq_diff(a, b) < 0


def seq_gt(a: int, b: int) -> bool:
    return seq_diff(a, b) > 0


def ts_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between 32-bit RTP timestamps."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def extend_sequence(sequence_number: int, reference: int) -> int:
    """The extended (cycle-counting) value of a 16-bit sequence number nearest to ``reference``.

    ``reference`` is an extended sequence number already seen, e.g. the highest one so far.
    """
    return reference + seq_diff(sequence_number, reference & 0xFFFF)


def extend_timestamp(timestamp: int, reference: int) -> int:
    """The extended value of a 32-bit RTP timestamp nearest to the extended ``reference``."""
    return reference + ts_diff(timestamp, reference & 0xFFFFFFFF)


# --- outgoing stream continuity -------------------------------------------------------------------------


class RewrittenHeader(NamedTuple):
    sequence_number: int
    timestamp: int
    ssrc: int
    marker: bool


class SequenceRewriter:
    """Keep one outgoing SSRC with continuous sequence numbers and timestamps across source changes.

    The relay feeds every packet of the source leg through ``rewrite``. While the source stream stays the
    same, the offsets are fixed so gaps (loss) and reordering pass through unchanged. When the source
    changes (new SSRC, ``source_changed()`` after a re-INVITE, or a sequence jump larger than
    ``max_sequence_jump``), new offsets make the first packet of the new stream follow the last one sent:
    sequence + 1, and the timestamp advanced by the wall time elapsed (at least one frame), with the
    marker bit set so the far end's jitter buffer resynchronises.
    """

    __slots__ = (
        "_clock_rate",
        "_default_frame_samples",
        "_last_out_sequence",
        "_last_out_time",
        "_last_out_timestamp",
        "_max_sequence_jump",
        "_previous_source_highest",
        "_previous_source_ssrc",
        "_resync_pending",
        "_sequence_offset",
        "_source_highest_sequence",
        "_source_ssrc",
        "_switch_time",
        "_timestamp_offset",
        "resyncs",
        "ssrc",
        "stragglers_dropped",
    )

    def __init__(
        self,
        ssrc: int,
        clock_rate: int,
        *,
        initial_sequence: int = 0,
        initial_timestamp: int = 0,
        frame_duration: float = 0.02,
        max_sequence_jump: int = 3000,
    ) -> None:
        if clock_rate <= 0:
            raise ValueError("clock rate must be positive")
        self.ssrc = ssrc & 0xFFFFFFFF
        self._clock_rate = clock_rate
        self._default_frame_samples = max(1, round(frame_duration * clock_rate))
        self._max_sequence_jump = max_sequence_jump
        # "last sent" is one before the initial values, so the first packet goes out with them.
        self._last_out_sequence = (initial_sequence - 1) & 0xFFFF
        self._last_out_timestamp = (initial_timestamp - self._default_frame_samples) & 0xFFFFFFFF
        self._last_out_time: float | None = None
        self._source_ssrc: int | None = None
        self._previous_source_ssrc: int | None = None
        self._previous_source_highest = 0
        self._switch_time = 0.0
        self._source_highest_sequence = 0
        self._sequence_offset = 0
        self._timestamp_offset = 0
        self._resync_pending = True
        self.resyncs = 0
        self.stragglers_dropped = 0

    def source_changed(self) -> None:
        """Signalling changed the source (re-INVITE): re-anchor on the next packet even if the SSRC stays."""
        self._resync_pending = True

    def rewrite(
        self, sequence_number: int, timestamp: int, ssrc: int, marker: bool, now: float
    ) -> RewrittenHeader | None:
        """Map one source header to the outgoing header; None for a late packet of a replaced source."""
        if ssrc != self._source_ssrc:
            if (
                ssrc == self._previous_source_ssrc
                and now - self._switch_time < 1.0
                and seq_diff(sequence_number, self._previous_source_highest) <= 0
            ):
                # A reordered packet of the stream we just left: sending it would move timestamps back.
                # (A newer sequence number means that source resumed, e.g. after a prompt: switch back.)
                self.stragglers_dropped += 1
                return None
            self._resync(sequence_number, timestamp, ssrc, now)
            marker = True
        elif self._resync_pending or (
            abs(seq_diff(sequence_number, self._source_highest_sequence)) > self._max_sequence_jump
        ):
            self._resync(sequence_number, timestamp, ssrc, now)
            marker = True
        out_sequence = (sequence_number + self._sequence_offset) & 0xFFFF
        out_timestamp = (timestamp + self._timestamp_offset) & 0xFFFFFFFF
        if seq_diff(sequence_number, self._source_highest_sequence) > 0:
            self._source_highest_sequence = sequence_number
        if seq_diff(out_sequence, self._last_out_sequence) > 0:
            self._last_out_sequence = out_sequence
            self._last_out_timestamp = out_timestamp
            self._last_out_time = now
        return RewrittenHeader(out_sequence, out_timestamp, self.ssrc, marker)

    def rewrite_into(
        self,
        buffer: bytearray,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        marker: bool,
        payload_type: int,
        now: float,
    ) -> int:
        """``rewrite``, written straight into octets 1..11 of ``buffer`` with ``payload_type``.

        Returns the outgoing timestamp, or -1 when the packet is to be dropped (``buffer`` untouched).
        The common case (same source, no resync due) is handled here without building a header tuple;
        it changes the state exactly as ``rewrite`` would.
        """
        if ssrc == self._source_ssrc and not self._resync_pending:
            diff = ((sequence_number - self._source_highest_sequence + 0x8000) & 0xFFFF) - 0x8000
            if -self._max_sequence_jump <= diff <= self._max_sequence_jump:
                out_sequence = (sequence_number + self._sequence_offset) & 0xFFFF
                out_timestamp = (timestamp + self._timestamp_offset) & 0xFFFFFFFF
                if diff > 0:
                    self._source_highest_sequence = sequence_number
                if ((out_sequence - self._last_out_sequence + 0x8000) & 0xFFFF) > 0x8000:
                    self._last_out_sequence = out_sequence
                    self._last_out_timestamp = out_timestamp
                    self._last_out_time = now
                _REWRITE_WITH_TYPE.pack_into(
                    buffer, 1, (0x80 if marker else 0) | payload_type, out_sequence, out_timestamp, self.ssrc
                )
                return out_timestamp
        header = self.rewrite(sequence_number, timestamp, ssrc, marker, now)
        if header is None:
            return -1
        _REWRITE_WITH_TYPE.pack_into(
            buffer, 1, (0x80 if header.marker else 0) | payload_type, header[0], header[1], header[2]
        )
        return header.timestamp

    def rewrite_packet(self, packet: RtpPacket, now: float) -> RtpPacket | None:
        """``rewrite`` applied in place to a parsed packet (returned for chaining), or None to drop it."""
        header = self.rewrite(packet.sequence_number, packet.timestamp, packet.ssrc, packet.marker, now)
        if header is None:
            return None
        packet.sequence_number, packet.timestamp, packet.ssrc, packet.marker = header
        return packet

    def rewrite_bytes(self, data: bytes, now: float) -> bytes | None:
        """``rewrite`` on raw bytes (validated with ``parse_header``), touching only the fixed header."""
        if len(data) < RTP_HEADER_SIZE:
            raise ValueError("RTP packet is too short")
        first, second, sequence_number, timestamp, ssrc = _FIXED_HEADER.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise ValueError("RTP version must be 2")
        header = self.rewrite(sequence_number, timestamp, ssrc, bool(second & 0x80), now)
        if header is None:
            return None
        out = bytearray(data)
        out[1] = (second & 0x7F) | (0x80 if header.marker else 0)
        _REWRITE.pack_into(out, 2, header.sequence_number, header.timestamp, header.ssrc)
        return bytes(out)

    def _resync(self, sequence_number: int, timestamp: int, ssrc: int, now: float) -> None:
        if self._source_ssrc is not None and ssrc != self._source_ssrc:
            self._previous_source_ssrc = self._source_ssrc
            self._previous_source_highest = self._source_highest_sequence
            self._switch_time = now
        if self._last_out_time is not None:
            self.resyncs += 1
            elapsed = round((now - self._last_out_time) * self._clock_rate)
            advance = max(self._default_frame_samples, elapsed)
        else:
            advance = self._default_frame_samples
        self._source_ssrc = ssrc
        self._source_highest_sequence = sequence_number
        self._sequence_offset = (self._last_out_sequence + 1 - sequence_number) & 0xFFFF
        self._timestamp_offset = (self._last_out_timestamp + advance - timestamp) & 0xFFFFFFFF
        self._resync_pending = False
