"""SDP model (RFC 8866, formerly RFC 4566) and offer/answer (RFC 3264).

The model keeps every ``a=`` line in its original order (as :class:`Attribute`), so that
``str(SessionDescription.parse(text)) == text`` for canonical CRLF input; typed views
(codecs, direction, ptime, rtcp, ...) are read from those attributes on demand. Attributes whose
syntax we rely on (rtpmap, fmtp, ptime, maxptime, rtcp) are validated at parse time, so that a
description which parses can be negotiated without surprises. Every parse failure raises
``ValueError`` with a message naming the offending line; callers map that to 400.

Offer/answer is split in two steps: :func:`negotiate` decides per m-line (pure, no addresses),
:func:`build_answer` writes the answer; :func:`create_answer` does both. No common codec on any
offered stream raises :class:`NoCommonCodecError` (callers answer 488; it subclasses ValueError, so
catch it before a generic ValueError → 400).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

__all__ = [
    "DEFAULT_CODECS",
    "Attribute",
    "Bandwidth",
    "Codec",
    "Connection",
    "Direction",
    "MediaDescription",
    "NoCommonCodecError",
    "OfferStream",
    "Origin",
    "OriginTracker",
    "RtcpAttribute",
    "RtpMap",
    "SessionDescription",
    "StreamDecision",
    "Timing",
    "build_answer",
    "create_answer",
    "create_offer",
    "negotiate",
]

CRLF = "\r\n"
MAX_SDP_LENGTH = 64 * 1024
_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")
_DIGITS = re.compile(r"^[0-9]{1,32}$")
_ATTRIBUTE_NAME = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]{1,64}$")
_FORBIDDEN_CHARS = re.compile(r"[\x00\r\n]")
_NUMBER = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,9})?$")
# Fast paths: one precompiled full match accepts the well-formed common case (a subset of what the
# step-by-step checks accept, giving the same result); anything it rejects goes through those checks,
# which name the offending field in the error exactly as before.
_TOKEN_CLASS = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]"
_ADDRESS_CLASS = r"[A-Za-z0-9.:_/%\[\]-]"
_WELL_FORMED_ORIGIN = re.compile(
    rf"([^ ]+) ([0-9]{{1,32}}) ([0-9]{{1,32}}) ({_TOKEN_CLASS}+) ({_TOKEN_CLASS}+) ({_ADDRESS_CLASS}+)"
)
_WELL_FORMED_CONNECTION = re.compile(rf"({_TOKEN_CLASS}+) ({_TOKEN_CLASS}+) ({_ADDRESS_CLASS}+)")
_WELL_FORMED_TIMING = re.compile(r"([0-9]{1,32}) ([0-9]{1,32})")
# Attribute name up to the first colon; the value (if any) is everything after it.
_WELL_FORMED_ATTRIBUTE = re.compile(rf"({_TOKEN_CLASS}{{1,64}})(?::(.*))?", re.DOTALL)
# An RTP m-line with a plain port and payload types in 0..127 written with at most 3 digits (as
# parse_m_line checks them); the proto and the port range are checked after the match.
_PAYLOAD_TYPE = r"(?:1[01][0-9]|12[0-7]|0[0-9][0-9]|[0-9][0-9]?)"
_WELL_FORMED_RTP_M_LINE = re.compile(
    rf"({_TOKEN_CLASS}+) ([0-9]{{1,5}}) ((?:UDP/TLS/)?RTP/S?AVPF?)((?: {_PAYLOAD_TYPE})+)"
)
# A whole body of well-formed lines, each ending in LF or CRLF; findall of _SDP_LINE then yields the
# (type, value) pairs without a Python step per line.
_WELL_FORMED_LINES = re.compile(r"(?:[a-z]=[^\x00\r\n]*\r?\n)+")
_SDP_LINE = re.compile(r"([a-z])=([^\x00\r\n]*)\r?\n")
RTP_PROTOS = frozenset(
    {"RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF"}
)
_NON_VOICE_CODECS = frozenset({"telephone-event", "cn", "red", "ulpfec", "rtx", "flexfec-03"})
# RFC 3551 table 4: static payload types whose rtpmap may be omitted.
_STATIC_AUDIO_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    13: ("CN", 8000, 1),
    18: ("G729", 8000, 1),
}
_DYNAMIC_PAYLOAD_TYPES = range(96, 128)


class Direction(enum.Enum):
    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_flags(cls, sends: bool, receives: bool) -> Direction:
        if sends and receives:
            return cls.SENDRECV
        if sends:
            return cls.SENDONLY
        if receives:
            return cls.RECVONLY
        return cls.INACTIVE

    def reversed(self) -> Direction:
        """The direction as seen from the other side (sendonly <-> recvonly)."""
        return Direction.from_flags(sends=self.receives, receives=self.sends)

    def intersect(self, other: Direction) -> Direction:
        return Direction.from_flags(self.sends and other.sends, self.receives and other.receives)


_DIRECTION_NAMES = frozenset(d.value for d in Direction)
_DIRECTION_BY_NAME = {d.value: d for d in Direction}  # Direction(name) without the enum call machinery


class NoCommonCodecError(ValueError):
    """No offered stream could be accepted: the caller answers 488 Not Acceptable Here."""


def _field_error(line_type: str, value: str, reason: str) -> ValueError:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return ValueError(f"SDP {line_type}= line {shown!r}: {reason}")


def _check_token(line_type: str, value: str, token: str, what: str) -> str:
    if not _TOKEN.match(token):
        raise _field_error(line_type, value, f"{what} {token!r} is not a token")
    return token


def _parse_port(line_type: str, value: str, text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        raise _field_error(line_type, value, f"port {text!r} is not a number")
    port = int(text)
    if port > 65535:
        raise _field_error(line_type, value, f"port {port} is out of range")
    return port


def _copy_connection(connection: Connection | None) -> Connection | None:
    return (
        None
        if connection is None
        else Connection(connection.address, connection.nettype, connection.addrtype)
    )


# ASCII letters and digits plus ``.:-_/%[]``, at least one (one regex call, not a generator per char).
_ADDRESS = re.compile(r"[A-Za-z0-9.:_/%\[\]-]+")


def _check_address(line_type: str, value: str, address: str) -> str:
    # Addresses may be FQDNs, IPv4/IPv6 literals, or multicast with /ttl/count suffixes.
    if not _ADDRESS.fullmatch(address):
        raise _field_error(line_type, value, f"address {address!r} is malformed")
    return address


@dataclass(slots=True)
class Origin:
    """``o=`` line; ``session_version`` must increase whenever a re-offer changes the description."""

    username: str
    session_id: str
    session_version: int
    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, value: str) -> Origin:
        match = _WELL_FORMED_ORIGIN.fullmatch(value)
        if match is not None:
            username, session_id, version, nettype, addrtype, address = match.groups()
            return cls(username, session_id, int(version), address, nettype, addrtype)
        parts = value.split(" ")
        if len(parts) != 6:
            raise _field_error("o", value, "expected 6 fields")
        username, session_id, version, nettype, addrtype, address = parts
        if not username:
            raise _field_error("o", value, "username is empty")
        for number, what in ((session_id, "session id"), (version, "session version")):
            if not _DIGITS.match(number):
                raise _field_error("o", value, f"{what} {number!r} is not a number")
        _check_token("o", value, nettype, "nettype")
        _check_token("o", value, addrtype, "addrtype")
        return cls(username, session_id, int(version), _check_address("o", value, address), nettype, addrtype)

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )

    def next_version(self) -> Origin:
        return replace(self, session_version=self.session_version + 1)


@dataclass(slots=True)
class Connection:
    """``c=`` line. ``address`` keeps any multicast ``/ttl/count`` suffix verbatim."""

    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, value: str) -> Connection:
        match = _WELL_FORMED_CONNECTION.fullmatch(value)
        if match is not None:
            nettype, addrtype, address = match.groups()
            return cls(address, nettype, addrtype)
        parts = value.split(" ")
        if len(parts) != 3:
            raise _field_error("c", value, "expected 3 fields")
        nettype, addrtype, address = parts
        _check_token("c", value, nettype, "nettype")
        _check_token("c", value, addrtype, "addrtype")
        return cls(_check_address("c", value, address), nettype, addrtype)

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"

    @property
    def is_hold_address(self) -> bool:
        """RFC 2543-style hold (RFC 3264 §8.4): do not send media to this peer."""
        return self.address.split("/", 1)[0] in ("0.0.0.0", "::")


@dataclass(slots=True)
class Bandwidth:
    bwtype: str
    kbps: int

    @classmethod
    def parse(cls, value: str) -> Bandwidth:
        bwtype, sep, amount = value.partition(":")
        if not sep:
            raise _field_error("b", value, "expected <bwtype>:<bandwidth>")
        _check_token("b", value, bwtype, "bwtype")
        if not _DIGITS.match(amount):
            raise _field_error("b", value, f"bandwidth {amount!r} is not a number")
        return cls(bwtype, int(amount))

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.kbps}"


@dataclass(slots=True)
class Timing:
    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, value: str) -> Timing:
        match = _WELL_FORMED_TIMING.fullmatch(value)
        if match is not None:
            return cls(int(match[1]), int(match[2]))
        parts = value.split(" ")
        if len(parts) != 2 or not all(_DIGITS.match(p) for p in parts):
            raise _field_error("t", value, "expected <start-time> <stop-time>")
        return cls(int(parts[0]), int(parts[1]))


class Attribute(NamedTuple):
    """One ``a=`` line: a flag (``value is None``) or ``name:value``.

    An immutable tuple: copies of a description share their attributes (a B2BUA call copies and renders
    ~20 of them), and the collector stops tracking a tuple of strings after its first look at it."""

    name: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Attribute:
        return tuple.__new__(cls, _attribute_fields(text))

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    payload_type: int
    encoding_name: str
    clock_rate: int
    channels: int = 1

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        if cls is RtpMap:
            return _parse_rtpmap(value)
        return cls._parse(value)

    @classmethod
    def _parse(cls, value: str) -> RtpMap:
        pt_text, sep, encoding = value.partition(" ")
        if not sep:
            raise _field_error("a", "rtpmap:" + value, "expected <payload type> <encoding>")
        payload_type = _parse_payload_type("rtpmap:" + value, pt_text)
        pieces = encoding.strip().split("/")
        if len(pieces) not in (2, 3) or not pieces[0]:
            raise _field_error("a", "rtpmap:" + value, "expected <name>/<clock rate>[/<channels>]")
        _check_token("a", "rtpmap:" + value, pieces[0], "encoding name")
        if not all(p.isascii() and p.isdigit() and len(p) <= 9 for p in pieces[1:]):
            raise _field_error("a", "rtpmap:" + value, "clock rate and channels must be numbers")
        clock_rate = int(pieces[1])
        channels = int(pieces[2]) if len(pieces) == 3 else 1
        if clock_rate == 0 or channels == 0:
            raise _field_error("a", "rtpmap:" + value, "clock rate and channels must be positive")
        return cls(payload_type, pieces[0], clock_rate, channels)

    def __str__(self) -> str:
        suffix = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.payload_type} {self.encoding_name}/{self.clock_rate}{suffix}"


# The same few rtpmap values are parsed ~17 times a call (validation, codecs(), answer building); an
# RtpMap is immutable, so one parsed value can be shared. A value that fails raises each time (the
# cache keeps only results).
@functools.lru_cache(maxsize=512)
def _parse_rtpmap(value: str) -> RtpMap:
    return RtpMap._parse(value)


@dataclass(frozen=True, slots=True)
class RtcpAttribute:
    """``a=rtcp`` (RFC 3605)."""

    port: int
    connection: Connection | None = None

    @classmethod
    def parse(cls, value: str) -> RtcpAttribute:
        parts = value.split(" ")
        port = _parse_port("a", "rtcp:" + value, parts[0])
        if len(parts) == 1:
            return cls(port)
        if len(parts) != 4:
            raise _field_error("a", "rtcp:" + value, "expected <port> [<nettype> <addrtype> <address>]")
        return cls(port, Connection.parse(" ".join(parts[1:])))

    def __str__(self) -> str:
        return str(self.port) if self.connection is None else f"{self.port} {self.connection}"


def _parse_payload_type(context: str, text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 3 or int(text) > 127:
        raise _field_error("a", context, f"payload type {text!r} is not in 0..127")
    return int(text)


# Most a= lines of a call's SDP (rtpmap, fmtp, ptime, direction...) are the same text call after call:
# their checked split is kept (an Attribute is mutable, so each parse still builds a new one). Text that
# fails raises each time (the cache keeps only results).
@functools.lru_cache(maxsize=1024)
def _attribute_fields(text: str) -> tuple[str, str | None]:
    """``(name, value)`` of a valid ``a=`` value; raises ValueError naming the problem otherwise."""
    name: str
    value: str | None
    match = _WELL_FORMED_ATTRIBUTE.fullmatch(text)
    if match is not None:
        name, value = match.groups()
    else:
        name, sep, rest = text.partition(":")
        if not _ATTRIBUTE_NAME.match(name):
            raise _field_error("a", text, f"attribute name {name!r} is not a token")
        value = rest if sep else None
    if name in _VALIDATED_ATTRIBUTE_NAMES:
        _validate_attribute(Attribute(name, value), text)
    return name, value


# The attributes _validate_attribute checks; any other name needs no call.
_VALIDATED_ATTRIBUTE_NAMES = frozenset(
    {"rtpmap", "fmtp", "ptime", "maxptime", "rtcp", "rtcp-mux", *(d.value for d in Direction)}
)


def _validate_attribute(attribute: Attribute, text: str) -> None:
    name, value = attribute.name, attribute.value
    if name == "rtpmap":
        RtpMap.parse(value or "")
    elif name == "fmtp":
        fmt, sep, params = (value or "").partition(" ")
        if not sep or not fmt or not params.strip():
            raise _field_error("a", text, "expected <format> <parameters>")
    elif name in ("ptime", "maxptime"):
        if value is None or not _NUMBER.match(value) or float(value) <= 0:
            raise _field_error("a", text, f"{name} must be a positive number of milliseconds")
    elif name == "rtcp":
        RtcpAttribute.parse(value or "")
    elif name in _DIRECTION_NAMES or name == "rtcp-mux":
        if value is not None:
            raise _field_error("a", text, f"{name} takes no value")


class _AttributeMixin:
    attributes: list[Attribute]

    def get_attribute(self, name: str) -> Attribute | None:
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        return None

    def get_values(self, name: str) -> list[str]:
        return [a.value for a in self.attributes if a.name == name and a.value is not None]

    def has_attribute(self, name: str) -> bool:
        for attribute in self.attributes:
            if attribute.name == name:
                return True
        return False

    def remove_attributes(self, name: str) -> None:
        self.attributes[:] = [a for a in self.attributes if a.name != name]

    @property
    def explicit_direction(self) -> Direction | None:
        for attribute in self.attributes:
            direction = _DIRECTION_BY_NAME.get(attribute.name)
            if direction is not None:
                return direction
        return None

    def set_direction(self, direction: Direction) -> None:
        """Replace any direction attribute, keeping its position when there was one."""
        for index, attribute in enumerate(self.attributes):
            if attribute.name in _DIRECTION_NAMES:
                self.attributes[index] = Attribute(direction.value)
                self.attributes[index + 1 :] = [
                    a for a in self.attributes[index + 1 :] if a.name not in _DIRECTION_NAMES
                ]
                return
        self.attributes.append(Attribute(direction.value))


@dataclass(frozen=True, slots=True)
class Codec:
    """A codec as offered/answered on an m-line. ``payload_type`` is the number used on the wire."""

    name: str
    clock_rate: int
    channels: int = 1
    payload_type: int | None = None
    fmtp: str | None = None

    def matches(self, other: Codec) -> bool:
        return (
            self.name.lower() == other.name.lower()
            and self.clock_rate == other.clock_rate
            and self.channels == other.channels
        )

    @property
    def is_voice(self) -> bool:
        return self.name.lower() not in _NON_VOICE_CODECS


# Our supported audio codecs, in our preference order (used when we build offers).
DEFAULT_CODECS: tuple[Codec, ...] = (
    Codec("opus", 48000, 2, None, "minptime=10;useinbandfec=1"),
    Codec("PCMU", 8000, 1, 0),
    Codec("PCMA", 8000, 1, 8),
    Codec("telephone-event", 8000, 1, None, "0-16"),
)


@dataclass(slots=True)
class MediaDescription(_AttributeMixin):
    """One ``m=`` section. ``formats`` holds the format tokens (payload types for RTP)."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    information: str | None = None
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    encryption_key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)

    @classmethod
    def parse_m_line(cls, value: str) -> MediaDescription:
        match = _WELL_FORMED_RTP_M_LINE.fullmatch(value)
        if match is not None:
            media, port_text, proto, format_text = match.groups()
            port = int(port_text)
            if port <= 65535 and proto in RTP_PROTOS:
                return cls(media, port, proto, format_text[1:].split(" "), None)
        parts = value.split(" ")
        if len(parts) < 4:
            raise _field_error("m", value, "expected <media> <port> <proto> <fmt> ...")
        media, port_text, proto, *formats = parts
        _check_token("m", value, media, "media type")
        port_part, slash, count_text = port_text.partition("/")
        port = _parse_port("m", value, port_part)
        port_count = None
        if slash:
            if not count_text.isascii() or not count_text.isdigit() or len(count_text) > 5:
                raise _field_error("m", value, f"port count {count_text!r} is not a number")
            port_count = int(count_text)
        if not proto or not all(_TOKEN.match(p) for p in proto.split("/")):
            raise _field_error("m", value, f"proto {proto!r} is malformed")
        for fmt in formats:
            _check_token("m", value, fmt, "format")
            if proto in RTP_PROTOS and (not fmt.isdigit() or len(fmt) > 3 or int(fmt) > 127):
                raise _field_error("m", value, f"RTP payload type {fmt!r} is not in 0..127")
        return cls(media, port, proto, formats, port_count)

    def copy(self) -> MediaDescription:
        """A deep copy (lists and mutable line objects are new; strings, ints and attributes are shared)."""
        return MediaDescription(
            self.media,
            self.port,
            self.proto,
            list(self.formats),
            self.port_count,
            self.information,
            _copy_connection(self.connection),
            [Bandwidth(b.bwtype, b.kbps) for b in self.bandwidths],
            self.encryption_key,
            list(self.attributes),
        )

    def m_line(self) -> str:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        return " ".join([self.media, port, self.proto, *self.formats])

    @property
    def is_rtp(self) -> bool:
        return self.proto in RTP_PROTOS

    @property
    def rejected(self) -> bool:
        return self.port == 0

    def rtpmaps(self) -> dict[int, RtpMap]:
        result: dict[int, RtpMap] = {}
        for value in self.get_values("rtpmap"):
            rtpmap = RtpMap.parse(value)
            result.setdefault(rtpmap.payload_type, rtpmap)
        return result

    def fmtps(self) -> dict[str, str]:
        result: dict[str, str] = {}
        for value in self.get_values("fmtp"):
            fmt, _, params = value.partition(" ")
            result.setdefault(fmt, params.strip())
        return result

    def codecs(self) -> list[Codec]:
        """RTP formats in offer preference order; unknown dynamic types without rtpmap are skipped."""
        if self.proto not in RTP_PROTOS:
            return []
        # A call reads the codecs of the same few sections several times (check, answer, stream
        # parameters of both legs): the result is memoised on everything it is computed from, read
        # afresh each call, so a mutated section never gets a stale answer.
        rtpmap_values: list[str] = []
        fmtp_values: list[str] = []
        for attribute in self.attributes:
            name = attribute.name
            if name == "rtpmap":
                if attribute.value is not None:
                    rtpmap_values.append(attribute.value)
            elif name == "fmtp" and attribute.value is not None:
                fmtp_values.append(attribute.value)
        return list(_codecs_of(self.media, tuple(self.formats), tuple(rtpmap_values), tuple(fmtp_values)))

    @property
    def ptime(self) -> float | None:
        attribute = self.get_attribute("ptime")
        return float(attribute.value) if attribute is not None and attribute.value else None

    @property
    def rtcp(self) -> RtcpAttribute | None:
        attribute = self.get_attribute("rtcp")
        return RtcpAttribute.parse(attribute.value) if attribute and attribute.value else None

    @property
    def rtcp_mux(self) -> bool:
        return self.has_attribute("rtcp-mux")

    @property
    def mid(self) -> str | None:
        attribute = self.get_attribute("mid")
        return attribute.value if attribute is not None else None

    def lines(self) -> Iterable[str]:
        yield from self._render_lines([])

    def _render_lines(self, out: list[str]) -> list[str]:
        """Append this section's lines to ``out`` (one list for a whole description, joined once)."""
        append = out.append
        append("m=" + self.m_line())
        if self.information is not None:
            append("i=" + self.information)
        if self.connection is not None:
            append(f"c={self.connection}")
        for bandwidth in self.bandwidths:
            append(f"b={bandwidth}")
        if self.encryption_key is not None:
            append("k=" + self.encryption_key)
        out += [f"a={attribute}" for attribute in self.attributes]
        return out


@functools.lru_cache(maxsize=256)
def _codecs_of(
    media: str, formats: tuple[str, ...], rtpmap_values: tuple[str, ...], fmtp_values: tuple[str, ...]
) -> tuple[Codec, ...]:
    """:meth:`MediaDescription.codecs` of an RTP section (Codec is immutable, so results are shared).

    Raises as the section's own ``rtpmaps()``/``int(format)`` would; a failure is not cached.
    """
    rtpmaps: dict[int, RtpMap] = {}
    for value in rtpmap_values:
        rtpmap = RtpMap.parse(value)
        rtpmaps.setdefault(rtpmap.payload_type, rtpmap)
    fmtps: dict[str, str] = {}
    for value in fmtp_values:
        fmt, _, params = value.partition(" ")
        fmtps.setdefault(fmt, params.strip())
    codecs = []
    for fmt in formats:
        payload_type = int(fmt)
        known = rtpmaps.get(payload_type)
        if known is not None:
            name, rate, channels = known.encoding_name, known.clock_rate, known.channels
        elif payload_type in _STATIC_AUDIO_TYPES and media == "audio":
            name, rate, channels = _STATIC_AUDIO_TYPES[payload_type]
        else:
            continue
        codecs.append(Codec(name, rate, channels, payload_type, fmtps.get(fmt)))
    return tuple(codecs)


@dataclass(slots=True)
class SessionDescription(_AttributeMixin):
    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    timings: list[Timing] = field(default_factory=lambda: [Timing()])
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    version: int = 0
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    time_zones: str | None = None
    encryption_key: str | None = None

    @classmethod
    def parse(cls, data: str | bytes) -> SessionDescription:
        return _Parser(data).parse()

    def copy(self) -> SessionDescription:
        """A deep copy without a render/parse round trip (an INVITE session stamps a copy per SDP it sends).

        Every mutable part is new (lists, ``Origin``, ``Connection``, ``Timing``, ``Attribute``,
        ``Bandwidth``, media sections); immutable values are shared.
        """
        origin = self.origin
        return SessionDescription(
            Origin(
                origin.username,
                origin.session_id,
                origin.session_version,
                origin.address,
                origin.nettype,
                origin.addrtype,
            ),
            self.session_name,
            _copy_connection(self.connection),
            [Timing(t.start, t.stop, list(t.repeats)) for t in self.timings],
            list(self.attributes),
            [media.copy() for media in self.media],
            self.version,
            self.information,
            self.uri,
            list(self.emails),
            list(self.phones),
            [Bandwidth(b.bwtype, b.kbps) for b in self.bandwidths],
            self.time_zones,
            self.encryption_key,
        )

    def lines(self) -> Iterable[str]:
        yield from self._render_lines()

    def _render_lines(self) -> list[str]:
        """Every line in RFC 8866 order, without line ends (``__str__`` joins them in one call)."""
        out = [f"v={self.version}", f"o={self.origin}", "s=" + self.session_name]
        append = out.append
        if self.information is not None:
            append("i=" + self.information)
        if self.uri is not None:
            append("u=" + self.uri)
        out += ["e=" + email for email in self.emails]
        out += ["p=" + phone for phone in self.phones]
        if self.connection is not None:
            append(f"c={self.connection}")
        for bandwidth in self.bandwidths:
            append(f"b={bandwidth}")
        for timing in self.timings:
            append(f"t={timing.start} {timing.stop}")
            out += ["r=" + repeat for repeat in timing.repeats]
        if self.time_zones is not None:
            append("z=" + self.time_zones)
        if self.encryption_key is not None:
            append("k=" + self.encryption_key)
        out += [f"a={attribute}" for attribute in self.attributes]
        for media in self.media:
            media._render_lines(out)
        return out

    def __str__(self) -> str:
        out = self._render_lines()
        out.append("")  # the last line ends with CRLF too
        return CRLF.join(out)

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")

    def connection_for(self, media: MediaDescription) -> Connection | None:
        return media.connection if media.connection is not None else self.connection

    def direction_of(self, media: MediaDescription) -> Direction:
        """Declared direction: media-level attribute, else session-level, else sendrecv (RFC 3264 §5.1)."""
        return media.explicit_direction or self.explicit_direction or Direction.SENDRECV

    def effective_direction_of(self, media: MediaDescription) -> Direction:
        """Declared direction, with a 0.0.0.0 connection meaning "do not send to me" (RFC 3264 §8.4)."""
        direction = self.direction_of(media)
        connection = self.connection_for(media)
        # With ICE, 0.0.0.0 (and port 9) only means "no default candidate yet" (RFC 8839, RFC 8840).
        uses_ice = media.has_attribute("ice-ufrag") or self.has_attribute("ice-ufrag")
        if connection is not None and connection.is_hold_address and not uses_ice:
            direction = Direction.from_flags(direction.sends, receives=False)
        return direction

    def is_on_hold(self, media: MediaDescription) -> bool:
        """The sender of this description does not want to receive media on this stream."""
        return not self.effective_direction_of(media).receives


class _Parser:
    _SESSION_TYPES = "vosiuepcbtrzka"

    def __init__(self, data: str | bytes) -> None:
        if len(data) > MAX_SDP_LENGTH:
            raise ValueError(f"SDP is longer than {MAX_SDP_LENGTH} bytes")
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"SDP is not valid UTF-8 at byte {exc.start}") from None
        self.text = data

    def _lines(self) -> list[tuple[str, str]]:
        if _WELL_FORMED_LINES.fullmatch(self.text):
            lines: list[tuple[str, str]] = _SDP_LINE.findall(self.text)
            return lines
        return self._checked_lines()

    def _checked_lines(self) -> list[tuple[str, str]]:
        """Line by line, so that the first malformed line is the one the error names."""
        raw_lines = self.text.split("\n")
        if raw_lines and raw_lines[-1] in ("", "\r"):
            raw_lines.pop()
        lines = []
        for number, raw in enumerate(raw_lines, start=1):
            line = raw[:-1] if raw.endswith("\r") else raw
            if not line:
                raise ValueError(f"SDP line {number} is empty")
            if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
                raise ValueError(f"SDP line {number} {line[:40]!r} is not <type>=<value>")
            if _FORBIDDEN_CHARS.search(line):
                raise ValueError(f"SDP line {number} contains a NUL or bare CR")
            lines.append((line[0], line[2:]))
        if not lines:
            raise ValueError("SDP is empty")
        return lines

    def parse(self) -> SessionDescription:
        lines = self._lines()
        if lines[0][0] != "v" or lines[0][1] != "0":
            raise ValueError("SDP must start with v=0")
        if len(lines) < 3 or lines[1][0] != "o" or lines[2][0] != "s":
            raise ValueError("SDP must have o= and s= lines right after v=")
        description = SessionDescription(origin=Origin.parse(lines[1][1]), timings=[])
        description.session_name = lines[2][1]
        if not description.session_name:
            raise ValueError("SDP s= line is empty (use s=-)")
        index = 3
        while index < len(lines) and lines[index][0] != "m":
            line_type, value = lines[index]
            # Order is not enforced (real UAs get it wrong); serialising restores RFC 8866 order.
            if line_type not in self._SESSION_TYPES:
                raise ValueError(f"SDP {line_type}= line is not allowed at session level")
            self._session_line(description, line_type, value)
            index += 1
        if not description.timings:
            raise ValueError("SDP has no t= line")
        while index < len(lines):
            index = self._media_section(description, lines, index)
        return description

    @staticmethod
    def _session_line(description: SessionDescription, line_type: str, value: str) -> None:
        if line_type in "iuzk" and getattr(description, _SINGLE_FIELDS[line_type]) is not None:
            raise ValueError(f"SDP has more than one session-level {line_type}= line")
        if line_type == "i":
            description.information = value
        elif line_type == "u":
            description.uri = value
        elif line_type == "e":
            description.emails.append(value)
        elif line_type == "p":
            description.phones.append(value)
        elif line_type == "c":
            if description.connection is not None:
                raise ValueError("SDP has more than one session-level c= line")
            description.connection = Connection.parse(value)
        elif line_type == "b":
            description.bandwidths.append(Bandwidth.parse(value))
        elif line_type == "t":
            description.timings.append(Timing.parse(value))
        elif line_type == "r":
            if not description.timings:
                raise ValueError("SDP r= line without a preceding t= line")
            description.timings[-1].repeats.append(value)
        elif line_type == "z":
            description.time_zones = value
        elif line_type == "k":
            description.encryption_key = value
        elif line_type == "a":
            description.attributes.append(Attribute.parse(value))
        else:
            raise ValueError(f"SDP has a second {line_type}= line")

    @staticmethod
    def _media_section(description: SessionDescription, lines: list[tuple[str, str]], index: int) -> int:
        media = MediaDescription.parse_m_line(lines[index][1])
        attributes = media.attributes
        parse_attribute = Attribute.parse
        end = len(lines)
        index += 1
        while index < end:
            line_type, value = lines[index]
            # Most lines of a section are a= lines: tested first (each line matches one branch only).
            if line_type == "a":
                attributes.append(parse_attribute(value))
                index += 1
                continue
            if line_type == "m":
                break
            if line_type not in "icbk":
                raise ValueError(f"SDP {line_type}= line is not allowed in a media section")
            if line_type == "i":
                if media.information is not None:
                    raise ValueError("SDP media section has more than one i= line")
                media.information = value
            elif line_type == "c":
                if media.connection is not None:
                    raise ValueError("SDP media section has more than one c= line")
                media.connection = Connection.parse(value)
            elif line_type == "b":
                media.bandwidths.append(Bandwidth.parse(value))
            else:  # k
                media.encryption_key = value
            index += 1
        if media.connection is None and description.connection is None and media.port != 0:
            raise ValueError(f"SDP media section {media.m_line()!r} has no c= line")
        description.media.append(media)
        return index


_SINGLE_FIELDS = {"i": "information", "u": "uri", "z": "time_zones", "k": "encryption_key"}


# --------------------------------------------------------------------------------------------
# Offer/answer (RFC 3264)


@dataclass(frozen=True, slots=True)
class StreamDecision:
    """What to answer on one offered m-line. ``codecs`` is empty when the stream is rejected."""

    index: int
    offered: MediaDescription
    codecs: tuple[Codec, ...]
    direction: Direction
    rtcp_mux: bool
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return bool(self.codecs)


def _match_codecs(offered: Sequence[Codec], supported: Sequence[Codec]) -> tuple[Codec, ...]:
    """Intersection in the offerer's order, with the offerer's payload type numbers."""
    # Codec.matches compares (lower-cased name, clock rate, channels): keyed once per codec here.
    ours_by_key: dict[tuple[str, int, int], Codec] = {}
    for codec in supported:
        ours_by_key.setdefault((codec.name.lower(), codec.clock_rate, codec.channels), codec)
    chosen: list[Codec] = []
    taken: set[tuple[str, int, int]] = set()  # keys of chosen codecs: each matches its offered codec
    for offered_codec in offered:
        key = (offered_codec.name.lower(), offered_codec.clock_rate, offered_codec.channels)
        ours = ours_by_key.get(key)
        if ours is None or key in taken:
            continue
        taken.add(key)
        if type(ours) is Codec and ours.payload_type == offered_codec.payload_type:
            chosen.append(ours)  # the Codec we would build is equal to it, and Codecs are immutable
        else:
            chosen.append(
                Codec(ours.name, ours.clock_rate, ours.channels, offered_codec.payload_type, ours.fmtp)
            )
    if not any(codec.is_voice for codec in chosen):
        return ()
    return tuple(chosen)


def negotiate(
    offer: SessionDescription,
    supported: Sequence[Codec] = DEFAULT_CODECS,
    *,
    local_direction: Direction = Direction.SENDRECV,
    media_type: str = "audio",
    max_streams: int = 1,
    support_rtcp_mux: bool = True,
) -> list[StreamDecision]:
    """Decide, per offered m-line, what to answer.

    Accepts up to ``max_streams`` RTP streams of ``media_type`` that share a codec with ``supported``;
    every other m-line is rejected (answered with port 0). Raises :class:`NoCommonCodecError` when
    the offer had streams but none can be accepted.
    """
    decisions: list[StreamDecision] = []
    accepted = 0
    for index, media in enumerate(offer.media):
        reason = ""
        codecs: tuple[Codec, ...] = ()
        if media.rejected:
            reason = "rejected by offerer"
        elif media.media != media_type or not media.is_rtp:
            reason = f"{media.media} {media.proto} not supported"
        elif accepted >= max_streams:
            reason = "too many streams"
        else:
            codecs = _match_codecs(media.codecs(), supported)
            reason = "" if codecs else "no common codec"
        # RFC 3264 §6.1: answer the reverse of what the offerer does, limited by what we want.
        direction = offer.effective_direction_of(media).reversed().intersect(local_direction)
        decisions.append(
            StreamDecision(
                index, media, codecs, direction, support_rtcp_mux and media.rtcp_mux and bool(codecs), reason
            )
        )
        accepted += bool(codecs)
    if decisions and accepted == 0:
        reasons = "; ".join(f"m-line {d.index}: {d.reason}" for d in decisions)
        raise NoCommonCodecError(f"no acceptable stream in offer ({reasons})")
    return decisions


def _codec_attributes(codecs: Iterable[Codec]) -> list[Attribute]:
    attributes = [
        Attribute(
            "rtpmap",
            f"{c.payload_type} {c.name}/{c.clock_rate}" + (f"/{c.channels}" if c.channels != 1 else ""),
        )
        for c in codecs
    ]
    attributes += [Attribute("fmtp", f"{c.payload_type} {c.fmtp}") for c in codecs if c.fmtp]
    return attributes


def build_answer(
    offer: SessionDescription,
    decisions: Sequence[StreamDecision],
    *,
    origin: Origin,
    address: str,
    ports: Sequence[int],
    ptime: int | None = 20,
) -> SessionDescription:
    """Write the answer: one m-line per offered m-line, in order (RFC 3264 §6).

    ``ports`` gives our RTP port for each accepted stream, in order of the accepted decisions.
    """
    accepted_count = sum(d.accepted for d in decisions)
    if len(ports) != accepted_count:
        raise ValueError(f"need {accepted_count} ports for the accepted streams, got {len(ports)}")
    if len(decisions) != len(offer.media):
        raise ValueError("one decision per offered m-line is required")
    addrtype = "IP6" if ":" in address else "IP4"
    answer = SessionDescription(origin=origin, connection=Connection(address, addrtype=addrtype))
    free_ports = iter(ports)
    for decision in decisions:
        offered = decision.offered
        if not decision.accepted:
            media = MediaDescription(offered.media, 0, offered.proto, list(offered.formats) or ["0"])
        else:
            formats = [str(c.payload_type) for c in decision.codecs]
            media = MediaDescription(offered.media, next(free_ports), offered.proto, formats)
            media.attributes.extend(_codec_attributes(decision.codecs))
            if ptime is not None:
                media.attributes.append(Attribute("ptime", str(ptime)))
            if decision.rtcp_mux:
                media.attributes.append(Attribute("rtcp-mux"))
            media.attributes.append(Attribute(decision.direction.value))
        if offered.mid is not None:
            media.attributes.insert(0, Attribute("mid", offered.mid))
        answer.media.append(media)
    return answer


def create_answer(
    offer: SessionDescription,
    *,
    origin: Origin,
    address: str,
    port: int,
    supported: Sequence[Codec] = DEFAULT_CODECS,
    local_direction: Direction = Direction.SENDRECV,
    ptime: int | None = 20,
) -> SessionDescription:
    """Answer an audio offer with one stream on ``address:port``. Raises NoCommonCodecError (488)."""
    decisions = negotiate(offer, supported, local_direction=local_direction)
    return build_answer(offer, decisions, origin=origin, address=address, ports=[port], ptime=ptime)


@dataclass(frozen=True, slots=True)
class OfferStream:
    port: int
    codecs: Sequence[Codec] = DEFAULT_CODECS
    media: str = "audio"
    proto: str = "RTP/AVP"
    direction: Direction = Direction.SENDRECV
    rtcp_mux: bool = False
    ptime: int | None = 20


def _assign_payload_types(codecs: Sequence[Codec]) -> list[Codec]:
    used = {c.payload_type for c in codecs if c.payload_type is not None}
    free = (pt for pt in _DYNAMIC_PAYLOAD_TYPES if pt not in used)
    assigned = []
    for codec in codecs:
        if codec.payload_type is None:
            payload_type = next(free, None)
            if payload_type is None:
                raise ValueError("out of dynamic payload types")
            codec = Codec(codec.name, codec.clock_rate, codec.channels, payload_type, codec.fmtp)
        assigned.append(codec)
    return assigned


def create_offer(origin: Origin, address: str, streams: Sequence[OfferStream]) -> SessionDescription:
    """Build an offer; dynamic codecs get free payload types from 96 upwards."""
    addrtype = "IP6" if ":" in address else "IP4"
    offer = SessionDescription(origin=origin, connection=Connection(address, addrtype=addrtype))
    for stream in streams:
        codecs = _assign_payload_types(stream.codecs)
        if not codecs:
            raise ValueError("an offered stream needs at least one codec")
        media = MediaDescription(
            stream.media, stream.port, stream.proto, [str(c.payload_type) for c in codecs]
        )
        media.attributes.extend(_codec_attributes(codecs))
        if stream.ptime is not None:
            media.attributes.append(Attribute("ptime", str(stream.ptime)))
        if stream.rtcp_mux:
            media.attributes.append(Attribute("rtcp-mux"))
        media.attributes.append(Attribute(stream.direction.value))
        offer.media.append(media)
    return offer


class OriginTracker:
    """Keeps our o= line across a dialog: the version increments only when the body changes (RFC 3264 §8)."""

    def __init__(self, origin: Origin) -> None:
        self._origin = origin
        self._last_content: str | None = None

    @property
    def origin(self) -> Origin:
        return self._origin

    def stamp(self, description: SessionDescription) -> SessionDescription:
        """Give ``description`` our origin, bumping the version if it differs from the last one sent."""
        content = self._content_of(description)
        if self._last_content is not None and content != self._last_content:
            self._origin = self._origin.next_version()
        self._last_content = content
        description.origin = self._origin
        return description

    @staticmethod
    def _content_of(description: SessionDescription) -> str:
        lines = description._render_lines()
        del lines[1]  # the o= line (always second; no other line starts with "o=")
        return CRLF.join(lines)
