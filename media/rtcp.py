"""RTCP packets (RFC 3550 §6): SR, RR, SDES, BYE, APP, and passthrough for the rest; compound packets.

Each packet class parses exactly one RTCP packet (common header included) with ``parse(data)`` and
serialises it back with ``bytes(packet)``; ``parse_rtcp`` splits a compound datagram. Bad input raises a
``ValueError`` whose message names the packet type and the fault. Pure: no clock reads — NTP timestamps
are computed from wall-clock seconds the caller passes in.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Self

RTCP_VERSION = 2

PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_APP = 204

SDES_END = 0
SDES_CNAME = 1

MAX_REPORT_BLOCKS = 31
"""The 5-bit count field limits one SR/RR to 31 report blocks (RFC 3550 §6.4)."""

NTP_UNIX_OFFSET = 2_208_988_800
"""Seconds from the NTP epoch (1900) to the Unix epoch (1970)."""

_COMMON_HEADER = struct.Struct("!BBH")
_REPORT_BLOCK = struct.Struct("!IB3sIIII")
_SENDER_INFO = struct.Struct("!IQIII")
_WORD = struct.Struct("!I")


def _header(packet_type: int, count: int, body_size: int, padding_size: int) -> bytes:
    total = 4 + body_size + padding_size
    if total % 4:
        raise ValueError("RTCP packet size must be a multiple of 4")
    first = 0x80 | count | (0x20 if padding_size else 0)
    return _COMMON_HEADER.pack(first, packet_type, total // 4 - 1)


def _padding(padding_size: int) -> bytes:
    if not padding_size:
        return b""
    if not 0 < padding_size < 256:
        raise ValueError("RTCP padding length is invalid")
    return bytes(padding_size - 1) + bytes((padding_size,))


def _split_packet(data: bytes, offset: int) -> tuple[int, int, bytes, int, int]:
    """Validate the common header at ``offset``: ``(count, packet_type, body, padding_size, end)``."""
    if len(data) - offset < 4:
        raise ValueError("RTCP packet is too short")
    first, packet_type, length = _COMMON_HEADER.unpack_from(data, offset)
    if first >> 6 != RTCP_VERSION:
        raise ValueError("RTCP version must be 2")
    end = offset + 4 * (length + 1)
    if end > len(data):
        raise ValueError("RTCP packet length is invalid")
    body_end = end
    padding_size = 0
    if first & 0x20:
        padding_size = data[end - 1]
        if padding_size == 0 or padding_size > end - offset - 4:
            raise ValueError("RTCP padding length is invalid")
        body_end -= padding_size
    return first & 0x1F, packet_type, data[offset + 4 : body_end], padding_size, end


# --- report blocks ---------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class ReportBlock:
    """One reception report (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int
    """Fraction of packets lost since the previous report, as a fixed-point number times 256."""
    packets_lost: int
    """Cumulative number lost (signed 24-bit: duplicates can make it negative)."""
    highest_sequence: int
    """Extended highest sequence number received (cycles << 16 | sequence)."""
    jitter: int
    """Interarrival jitter in timestamp units."""
    lsr: int = 0
    """Middle 32 bits of the NTP timestamp of the last SR received from this source; 0 if none."""
    dlsr: int = 0
    """Delay since that SR, in units of 1/65536 s."""

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> ReportBlock:
        if len(data) - offset < 24:
            raise ValueError("RTCP report block is truncated")
        ssrc, fraction_lost, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        return cls(ssrc, fraction_lost, int.from_bytes(lost, "big", signed=True), highest, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        if not -(1 << 23) <= self.packets_lost < (1 << 23):
            raise ValueError("RTCP report block packets lost must fit in 24 signed bits")
        try:
            return _REPORT_BLOCK.pack(
                self.ssrc,
                self.fraction_lost,
                self.packets_lost.to_bytes(3, "big", signed=True),
                self.highest_sequence,
                self.jitter,
                self.lsr,
                self.dlsr,
            )
        except struct.error as exc:
            raise ValueError(f"RTCP report block field is out of range: {exc}") from None


def _parse_report_blocks(body: bytes, offset: int, count: int) -> list[ReportBlock]:
    return [ReportBlock.parse(body, offset + 24 * index) for index in range(count)]


# --- packet types ----------------------------------------------------------------------------------------


class _RtcpPacket:
    """Shared ``parse`` for the one-packet classes below."""

    __slots__ = ()
    packet_type: ClassVar[int]

    @classmethod
    def parse(cls, data: bytes) -> Self:
        """Parse exactly one RTCP packet of this class's type."""
        count, packet_type, body, padding_size, end = _split_packet(data, 0)
        if end != len(data):
            raise ValueError("RTCP packet length is invalid")
        if packet_type != cls.packet_type:
            raise ValueError(f"RTCP packet type {packet_type} is not {cls.packet_type}")
        return cls._from_body(count, body, padding_size)

    @classmethod
    def _from_body(cls, count: int, body: bytes, padding_size: int) -> Self:
        raise NotImplementedError


@dataclass(slots=True)
class RtcpSenderReport(_RtcpPacket):
    packet_type: ClassVar[int] = PT_SR

    ssrc: int
    ntp_timestamp: int
    """64-bit NTP timestamp (32.32 fixed point, seconds since 1900)."""
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)
    extension: bytes = b""
    """Profile-specific extension after the report blocks, kept verbatim."""
    padding_size: int = 0

    @classmethod
    def _from_body(cls, count: int, body: bytes, padding_size: int) -> Self:
        if len(body) < 24 + 24 * count:
            raise ValueError("RTCP sender report length is invalid")
        ssrc, ntp, rtp_timestamp, packets, octets = _SENDER_INFO.unpack_from(body)
        reports = _parse_report_blocks(body, 24, count)
        extension = body[24 + 24 * count :]
        return cls(ssrc, ntp, rtp_timestamp, packets, octets, reports, extension, padding_size)

    def __bytes__(self) -> bytes:
        if len(self.reports) > MAX_REPORT_BLOCKS:
            raise ValueError("RTCP sender report has more than 31 report blocks")
        try:
            info = _SENDER_INFO.pack(
                self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
            )
        except struct.error as exc:
            raise ValueError(f"RTCP sender report field is out of range: {exc}") from None
        body = info + b"".join(bytes(block) for block in self.reports) + self.extension
        return (
            _header(PT_SR, len(self.reports), len(body), self.padding_size)
            + body
            + _padding(self.padding_size)
        )


@dataclass(slots=True)
class RtcpReceiverReport(_RtcpPacket):
    packet_type: ClassVar[int] = PT_RR

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)
    extension: bytes = b""
    padding_size: int = 0

    @classmethod
    def _from_body(cls, count: int, body: bytes, padding_size: int) -> Self:
        if len(body) < 4 + 24 * count:
            raise ValueError("RTCP receiver report length is invalid")
        (ssrc,) = _WORD.unpack_from(body)
        return cls(ssrc, _parse_report_blocks(body, 4, count), body[4 + 24 * count :], padding_size)

    def __bytes__(self) -> bytes:
        if len(self.reports) > MAX_REPORT_BLOCKS:
            raise ValueError("RTCP receiver report has more than 31 report blocks")
        try:
            head = _WORD.pack(self.ssrc)
        except struct.error as exc:
            raise ValueError(f"RTCP receiver report field is out of range: {exc}") from None
        body = head + b"".join(bytes(block) for block in self.reports) + self.extension
        return (
            _header(PT_RR, len(self.reports), len(body), self.padding_size)
            + body
            + _padding(self.padding_size)
        )


@dataclass(slots=True)
class SdesChunk:
    ssrc: int
    items: list[tuple[int, bytes]] = field(default_factory=list)
    """``(item type, value)`` pairs, e.g. ``(SDES_CNAME, b"user@host")``."""

    @property
    def cname(self) -> bytes | None:
        for item_type, value in self.items:
            if item_type == SDES_CNAME:
                return value
        return None

    def __bytes__(self) -> bytes:
        out = bytearray(_WORD.pack(self.ssrc))
        for item_type, value in self.items:
            if not 1 <= item_type <= 255:
                raise ValueError("RTCP SDES item type must be in 1..255")
            if len(value) > 255:
                raise ValueError("RTCP SDES item is too long")
            out.append(item_type)
            out.append(len(value))
            out += value
        # The item list ends with at least one null octet, then pads to a 32-bit boundary.
        out.append(SDES_END)
        out += bytes(-len(out) % 4)
        return bytes(out)


@dataclass(slots=True)
class RtcpSourceDescription(_RtcpPacket):
    packet_type: ClassVar[int] = PT_SDES

    chunks: list[SdesChunk] = field(default_factory=list)
    padding_size: int = 0

    @classmethod
    def _from_body(cls, count: int, body: bytes, padding_size: int) -> Self:
        chunks: list[SdesChunk] = []
        offset = 0
        size = len(body)
        for _ in range(count):
            if offset + 4 > size:
                raise ValueError("RTCP SDES chunk is truncated")
            (ssrc,) = _WORD.unpack_from(body, offset)
            offset += 4
            items: list[tuple[int, bytes]] = []
            while True:
                if offset >= size:
                    raise ValueError("RTCP SDES item is truncated")
                item_type = body[offset]
                if item_type == SDES_END:
                    offset += 1
                    offset += -offset % 4
                    break
                if offset + 2 > size:
                    raise ValueError("RTCP SDES item is truncated")
                length = body[offset + 1]
                end = offset + 2 + length
                if end > size:
                    raise ValueError("RTCP SDES item is truncated")
                items.append((item_type, body[offset + 2 : end]))
                offset = end
            chunks.append(SdesChunk(ssrc, items))
        if any(body[offset:]):
            raise ValueError("RTCP SDES length is invalid")
        return cls(chunks, padding_size)

    def __bytes__(self) -> bytes:
        if len(self.chunks) > 31:
            raise ValueError("RTCP SDES has more than 31 chunks")
        body = b"".join(bytes(chunk) for chunk in self.chunks)
        return (
            _header(PT_SDES, len(self.chunks), len(body), self.padding_size)
            + body
            + _padding(self.padding_size)
        )


@dataclass(slots=True)
class RtcpBye(_RtcpPacket):
    packet_type: ClassVar[int] = PT_BYE

    sources: list[int] = field(default_factory=list)
    reason: bytes | None = None
    padding_size: int = 0

    @classmethod
    def _from_body(cls, count: int, body: bytes, padding_size: int) -> Self:
        sources_end = 4 * count
        if len(body) < sources_end:
            raise ValueError("RTCP bye length is invalid")
        sources = list(struct.unpack_from(f"!{count}I", body))
        reason: bytes | None = None
        if len(body) > sources_end:
            reason_length = body[sources_end]
            reason_end = sources_end + 1 + reason_length
            if reason_end > len(body):
                raise ValueError("RTCP bye length is invalid")
            reason = body[sources_end + 1 : reason_end]
        return cls(sources, reason, padding_size)

    def __bytes__(self) -> bytes:
        if len(self.sources) > 31:
            raise ValueError("RTCP bye has more than 31 sources")
        try:
            body = struct.pack(f"!{len(self.sources)}I", *self.sources)
        except struct.error as exc:
            raise ValueError(f"RTCP bye source is out of range: {exc}") from None
        if self.reason is not None:
            if len(self.reason) > 255:
                raise ValueError("RTCP bye reason is too long")
            reason = bytes((len(self.reason),)) + self.reason
            body += reason + bytes(-len(reason) % 4)
        return (
            _header(PT_BYE, len(self.sources), len(body), self.padding_size)
            + body
            + _padding(self.padding_size)
        )


@dataclass(slots=True)
class RtcpApp(_RtcpPacket):
    """Application-defined packet, passed through untouched."""

    packet_type: ClassVar[int] = PT_APP

    subtype: int
    ssrc: int
    name: bytes
    """Four ASCII octets."""
    data: bytes = b""
    padding_size: int = 0

    @classmethod
    def _from_body(cls, count: int, body: bytes, padding_size: int) -> Self:
        if len(body) < 8:
            raise ValueError("RTCP app length is invalid")
        (ssrc,) = _WORD.unpack_from(body)
        return cls(count, ssrc, body[4:8], body[8:], padding_size)

    def __bytes__(self) -> bytes:
        if len(self.name) != 4:
            raise ValueError("RTCP app name must be 4 octets")
        if not 0 <= self.subtype <= 31:
            raise ValueError("RTCP app subtype must be in 0..31")
        if len(self.data) % 4:
            raise ValueError("RTCP app data length must be a multiple of 4")
        body = _WORD.pack(self.ssrc) + self.name + self.data
        return (
            _header(PT_APP, self.subtype, len(body), self.padding_size) + body + _padding(self.padding_size)
        )


@dataclass(slots=True)
class RtcpUnknown:
    """Any other packet type (RTPFB 205, PSFB 206, XR 207, ...), kept verbatim for relaying."""

    packet_type: int
    count: int
    body: bytes
    padding_size: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtcpUnknown:
        count, packet_type, body, padding_size, end = _split_packet(data, 0)
        if end != len(data):
            raise ValueError("RTCP packet length is invalid")
        return cls(packet_type, count, body, padding_size)

    def __bytes__(self) -> bytes:
        if not 0 <= self.count <= 31:
            raise ValueError("RTCP count must be in 0..31")
        if not 0 <= self.packet_type <= 255:
            raise ValueError("RTCP packet type must be in 0..255")
        return (
            _header(self.packet_type, self.count, len(self.body), self.padding_size)
            + self.body
            + _padding(self.padding_size)
        )


RtcpPacket = RtcpSenderReport | RtcpReceiverReport | RtcpSourceDescription | RtcpBye | RtcpApp | RtcpUnknown

_KnownPacket = RtcpSenderReport | RtcpReceiverReport | RtcpSourceDescription | RtcpBye | RtcpApp
_PARSERS: dict[int, type[_KnownPacket]] = {
    PT_SR: RtcpSenderReport,
    PT_RR: RtcpReceiverReport,
    PT_SDES: RtcpSourceDescription,
    PT_BYE: RtcpBye,
    PT_APP: RtcpApp,
}


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Split and parse a (compound) RTCP datagram."""
    if not data:
        raise ValueError("RTCP packet is too short")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        count, packet_type, body, padding_size, end = _split_packet(data, offset)
        parser = _PARSERS.get(packet_type)
        if parser is None:
            packets.append(RtcpUnknown(packet_type, count, body, padding_size))
        else:
            packets.append(parser._from_body(count, body, padding_size))
        offset = end
    return packets


def serialize_rtcp(packets: Iterable[RtcpPacket]) -> bytes:
    """Concatenate packets into one compound datagram."""
    return b"".join(bytes(packet) for packet in packets)


# --- NTP time and report builders ----------------------------------------------------------------------


def ntp_from_unix(seconds: float) -> int:
    """64-bit NTP timestamp for a Unix wall-clock time in seconds."""
    ntp_seconds = seconds + NTP_UNIX_OFFSET
    whole = int(ntp_seconds)
    fraction = int((ntp_seconds - whole) * (1 << 32))
    return ((whole & 0xFFFFFFFF) << 32) | (fraction & 0xFFFFFFFF)


def unix_from_ntp(ntp_timestamp: int) -> float:
    return (ntp_timestamp >> 32) - NTP_UNIX_OFFSET + (ntp_timestamp & 0xFFFFFFFF) / (1 << 32)


def ntp_middle32(ntp_timestamp: int) -> int:
    """The "compact" NTP form used by LSR/DLSR: low 16 bits of seconds, high 16 bits of fraction."""
    return (ntp_timestamp >> 16) & 0xFFFFFFFF


def _cname_chunk(ssrc: int, cname: bytes | str | None) -> list[RtcpPacket]:
    if cname is None:
        return []
    value = cname.encode() if isinstance(cname, str) else cname
    return [RtcpSourceDescription([SdesChunk(ssrc, [(SDES_CNAME, value)])])]


def _overflow_reports(ssrc: int, blocks: list[ReportBlock]) -> list[RtcpPacket]:
    """Blocks beyond the first 31 go into extra RRs (RFC 3550 §6.4.2)."""
    return [
        RtcpReceiverReport(ssrc, blocks[start : start + MAX_REPORT_BLOCKS])
        for start in range(0, len(blocks), MAX_REPORT_BLOCKS)
    ]


def build_receiver_report(
    ssrc: int, blocks: Iterable[ReportBlock], cname: bytes | str | None = None
) -> list[RtcpPacket]:
    """A compound RR (+ SDES CNAME) for a receiver that sent nothing in the last interval."""
    block_list = list(blocks)
    reports = _overflow_reports(ssrc, block_list) or [RtcpReceiverReport(ssrc)]
    return reports + _cname_chunk(ssrc, cname)


def build_sender_report(
    ssrc: int,
    *,
    wallclock: float,
    rtp_timestamp: int,
    packet_count: int,
    octet_count: int,
    blocks: Iterable[ReportBlock] = (),
    cname: bytes | str | None = None,
) -> list[RtcpPacket]:
    """A compound SR (+ extra RRs beyond 31 blocks, + SDES CNAME). ``wallclock`` is Unix seconds."""
    block_list = list(blocks)
    report = RtcpSenderReport(
        ssrc,
        ntp_from_unix(wallclock),
        rtp_timestamp & 0xFFFFFFFF,
        packet_count & 0xFFFFFFFF,
        octet_count & 0xFFFFFFFF,
        block_list[:MAX_REPORT_BLOCKS],
    )
    return [report, *_overflow_reports(ssrc, block_list[MAX_REPORT_BLOCKS:]), *_cname_chunk(ssrc, cname)]
