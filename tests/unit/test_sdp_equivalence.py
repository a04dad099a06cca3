"""The fast SDP paths against the straightforward implementation they replaced (kept here as an oracle).

``signaling.sdp`` parses well-formed text through precompiled full matches and caches, renders with one
join and memoises ``codecs()``; ``media_sdp.stream_params`` matches codecs through a key set. The
reference functions below are the step-by-step code that was there before, building the same model
classes: for generated and mutated inputs both must give an equal model (or the same ``ValueError``
message), the same text, the same codecs (also after the model is mutated) and the same matches.
Helpers that did not change (``_field_error``, ``_check_token``, ``_parse_port``, ``_check_address``,
``Bandwidth.parse``, ``RtcpAttribute.parse``, ``RtpMap._parse``) are shared with the module.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media.control import LocalMedia
from signaling import sdp
from signaling.callcontrol import media_sdp
from signaling.callcontrol.config import CALL_CODECS
from signaling.sdp import (
    Attribute,
    Bandwidth,
    Codec,
    Connection,
    MediaDescription,
    Origin,
    RtcpAttribute,
    RtpMap,
    SessionDescription,
    Timing,
)
from tests.unit.test_sdp import AUDIO_VIDEO_OFFER, BARESIP_OFFER, CHROME_OFFER, SIPP_OFFER

# ---- the reference (previous) implementation --------------------------------------------------------

_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")
_DIGITS = re.compile(r"^[0-9]{1,32}$")
_ATTRIBUTE_NAME = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]{1,64}$")
_FORBIDDEN_CHARS = re.compile(r"[\x00\r\n]")
_NUMBER = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,9})?$")
_DIRECTION_NAMES = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
_SINGLE_FIELDS = {"i": "information", "u": "uri", "z": "time_zones", "k": "encryption_key"}


def ref_origin(value: str) -> Origin:
    parts = value.split(" ")
    if len(parts) != 6:
        raise sdp._field_error("o", value, "expected 6 fields")
    username, session_id, version, nettype, addrtype, address = parts
    if not username:
        raise sdp._field_error("o", value, "username is empty")
    for number, what in ((session_id, "session id"), (version, "session version")):
        if not _DIGITS.match(number):
            raise sdp._field_error("o", value, f"{what} {number!r} is not a number")
    sdp._check_token("o", value, nettype, "nettype")
    sdp._check_token("o", value, addrtype, "addrtype")
    return Origin(
        username, session_id, int(version), sdp._check_address("o", value, address), nettype, addrtype
    )


def ref_connection(value: str) -> Connection:
    parts = value.split(" ")
    if len(parts) != 3:
        raise sdp._field_error("c", value, "expected 3 fields")
    nettype, addrtype, address = parts
    sdp._check_token("c", value, nettype, "nettype")
    sdp._check_token("c", value, addrtype, "addrtype")
    return Connection(sdp._check_address("c", value, address), nettype, addrtype)


def ref_timing(value: str) -> Timing:
    parts = value.split(" ")
    if len(parts) != 2 or not all(_DIGITS.match(p) for p in parts):
        raise sdp._field_error("t", value, "expected <start-time> <stop-time>")
    return Timing(int(parts[0]), int(parts[1]))


def ref_validate_attribute(attribute: Attribute, text: str) -> None:
    name, value = attribute.name, attribute.value
    if name == "rtpmap":
        RtpMap._parse(value or "")
    elif name == "fmtp":
        fmt, sep, params = (value or "").partition(" ")
        if not sep or not fmt or not params.strip():
            raise sdp._field_error("a", text, "expected <format> <parameters>")
    elif name in ("ptime", "maxptime"):
        if value is None or not _NUMBER.match(value) or float(value) <= 0:
            raise sdp._field_error("a", text, f"{name} must be a positive number of milliseconds")
    elif name == "rtcp":
        RtcpAttribute.parse(value or "")
    elif name in _DIRECTION_NAMES or name == "rtcp-mux":
        if value is not None:
            raise sdp._field_error("a", text, f"{name} takes no value")


def ref_attribute(text: str) -> Attribute:
    name, sep, value = text.partition(":")
    if not _ATTRIBUTE_NAME.match(name):
        raise sdp._field_error("a", text, f"attribute name {name!r} is not a token")
    attribute = Attribute(name, value if sep else None)
    ref_validate_attribute(attribute, text)
    return attribute


def ref_m_line(value: str) -> MediaDescription:
    parts = value.split(" ")
    if len(parts) < 4:
        raise sdp._field_error("m", value, "expected <media> <port> <proto> <fmt> ...")
    media, port_text, proto, *formats = parts
    sdp._check_token("m", value, media, "media type")
    port_part, slash, count_text = port_text.partition("/")
    port = sdp._parse_port("m", value, port_part)
    port_count = None
    if slash:
        if not count_text.isascii() or not count_text.isdigit() or len(count_text) > 5:
            raise sdp._field_error("m", value, f"port count {count_text!r} is not a number")
        port_count = int(count_text)
    if not proto or not all(_TOKEN.match(p) for p in proto.split("/")):
        raise sdp._field_error("m", value, f"proto {proto!r} is malformed")
    for fmt in formats:
        sdp._check_token("m", value, fmt, "format")
        if proto in sdp.RTP_PROTOS and (not fmt.isdigit() or len(fmt) > 3 or int(fmt) > 127):
            raise sdp._field_error("m", value, f"RTP payload type {fmt!r} is not in 0..127")
    return MediaDescription(media, port, proto, formats, port_count)


def ref_lines(data: str | bytes) -> list[tuple[str, str]]:
    if len(data) > sdp.MAX_SDP_LENGTH:
        raise ValueError(f"SDP is longer than {sdp.MAX_SDP_LENGTH} bytes")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"SDP is not valid UTF-8 at byte {exc.start}") from None
    raw_lines = data.split("\n")
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


def ref_session_line(description: SessionDescription, line_type: str, value: str) -> None:
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
        description.connection = ref_connection(value)
    elif line_type == "b":
        description.bandwidths.append(Bandwidth.parse(value))
    elif line_type == "t":
        description.timings.append(ref_timing(value))
    elif line_type == "r":
        if not description.timings:
            raise ValueError("SDP r= line without a preceding t= line")
        description.timings[-1].repeats.append(value)
    elif line_type == "z":
        description.time_zones = value
    elif line_type == "k":
        description.encryption_key = value
    elif line_type == "a":
        description.attributes.append(ref_attribute(value))
    else:
        raise ValueError(f"SDP has a second {line_type}= line")


def ref_media_section(description: SessionDescription, lines: list[tuple[str, str]], index: int) -> int:
    media = ref_m_line(lines[index][1])
    index += 1
    while index < len(lines) and lines[index][0] != "m":
        line_type, value = lines[index]
        if line_type not in "icbka":
            raise ValueError(f"SDP {line_type}= line is not allowed in a media section")
        if line_type == "i":
            if media.information is not None:
                raise ValueError("SDP media section has more than one i= line")
            media.information = value
        elif line_type == "c":
            if media.connection is not None:
                raise ValueError("SDP media section has more than one c= line")
            media.connection = ref_connection(value)
        elif line_type == "b":
            media.bandwidths.append(Bandwidth.parse(value))
        elif line_type == "k":
            media.encryption_key = value
        else:
            media.attributes.append(ref_attribute(value))
        index += 1
    if media.connection is None and description.connection is None and media.port != 0:
        raise ValueError(f"SDP media section {media.m_line()!r} has no c= line")
    description.media.append(media)
    return index


def ref_parse(data: str | bytes) -> SessionDescription:
    lines = ref_lines(data)
    if lines[0][0] != "v" or lines[0][1] != "0":
        raise ValueError("SDP must start with v=0")
    if len(lines) < 3 or lines[1][0] != "o" or lines[2][0] != "s":
        raise ValueError("SDP must have o= and s= lines right after v=")
    description = SessionDescription(origin=ref_origin(lines[1][1]), timings=[])
    description.session_name = lines[2][1]
    if not description.session_name:
        raise ValueError("SDP s= line is empty (use s=-)")
    index = 3
    while index < len(lines) and lines[index][0] != "m":
        line_type, value = lines[index]
        if line_type not in "vosiuepcbtrzka":
            raise ValueError(f"SDP {line_type}= line is not allowed at session level")
        ref_session_line(description, line_type, value)
        index += 1
    if not description.timings:
        raise ValueError("SDP has no t= line")
    while index < len(lines):
        index = ref_media_section(description, lines, index)
    return description


def ref_media_lines(media: MediaDescription) -> list[str]:
    out = ["m=" + media.m_line()]
    if media.information is not None:
        out.append("i=" + media.information)
    if media.connection is not None:
        out.append(f"c={media.connection}")
    out += [f"b={bandwidth}" for bandwidth in media.bandwidths]
    if media.encryption_key is not None:
        out.append("k=" + media.encryption_key)
    out += [f"a={attribute}" for attribute in media.attributes]
    return out


def ref_session_lines(description: SessionDescription) -> list[str]:
    out = [f"v={description.version}", f"o={description.origin}", "s=" + description.session_name]
    if description.information is not None:
        out.append("i=" + description.information)
    if description.uri is not None:
        out.append("u=" + description.uri)
    out += ["e=" + email for email in description.emails]
    out += ["p=" + phone for phone in description.phones]
    if description.connection is not None:
        out.append(f"c={description.connection}")
    out += [f"b={bandwidth}" for bandwidth in description.bandwidths]
    for timing in description.timings:
        out.append(f"t={timing.start} {timing.stop}")
        out += ["r=" + repeat for repeat in timing.repeats]
    if description.time_zones is not None:
        out.append("z=" + description.time_zones)
    if description.encryption_key is not None:
        out.append("k=" + description.encryption_key)
    out += [f"a={attribute}" for attribute in description.attributes]
    for media in description.media:
        out += ref_media_lines(media)
    return out


def ref_codecs(media: MediaDescription) -> list[Codec]:
    if media.proto not in sdp.RTP_PROTOS:
        return []
    rtpmaps: dict[int, RtpMap] = {}
    for value in media.get_values("rtpmap"):
        rtpmap = RtpMap._parse(value)
        rtpmaps.setdefault(rtpmap.payload_type, rtpmap)
    fmtps: dict[str, str] = {}
    for value in media.get_values("fmtp"):
        fmt, _, params = value.partition(" ")
        fmtps.setdefault(fmt, params.strip())
    codecs = []
    for fmt in media.formats:
        payload_type = int(fmt)
        known = rtpmaps.get(payload_type)
        if known is not None:
            name, rate, channels = known.encoding_name, known.clock_rate, known.channels
        elif payload_type in sdp._STATIC_AUDIO_TYPES and media.media == "audio":
            name, rate, channels = sdp._STATIC_AUDIO_TYPES[payload_type]
        else:
            continue
        codecs.append(Codec(name, rate, channels, payload_type, fmtps.get(fmt)))
    return codecs


def ref_match_codecs(offered: Sequence[Codec], supported: Sequence[Codec]) -> tuple[Codec, ...]:
    ours_by_key: dict[tuple[str, int, int], Codec] = {}
    for codec in supported:
        ours_by_key.setdefault((codec.name.lower(), codec.clock_rate, codec.channels), codec)
    chosen: list[Codec] = []
    taken: set[tuple[str, int, int]] = set()
    for offered_codec in offered:
        key = (offered_codec.name.lower(), offered_codec.clock_rate, offered_codec.channels)
        ours = ours_by_key.get(key)
        if ours is None or key in taken:
            continue
        taken.add(key)
        chosen.append(Codec(ours.name, ours.clock_rate, ours.channels, offered_codec.payload_type, ours.fmtp))
    if not any(codec.is_voice for codec in chosen):
        return ()
    return tuple(chosen)


def outcome(function: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", result) or ("error", message): ValueError is the only exception either side may raise."""
    try:
        return "ok", function()
    except ValueError as exc:
        return "error", str(exc)


# ---- inputs -------------------------------------------------------------------------------------------

CORPUS = [SIPP_OFFER, BARESIP_OFFER, CHROME_OFFER, AUDIO_VIDEO_OFFER]
# Fragments that reach every branch of the line parsers, fast path and fallback alike.
FRAGMENTS = [
    " ",
    ":",
    "/",
    "0",
    "1",
    "9",
    "12",
    "127",
    "128",
    "007",
    "65535",
    "65536",
    "00080",
    "a",
    "IN",
    "IP4",
    "IP6",
    "127.0.0.1",
    "::1",
    "[::1]",
    "host.example",
    "0.0.0.0",
    "RTP/AVP",
    "RTP/SAVPF",
    "UDP/TLS/RTP/SAVPF",
    "UDP/TLS/RTP/AVP",
    "RTP/AVP/TCP",
    "TCP/RTP/AVP",
    "UDP/DTLS/SCTP",
    "webrtc-datachannel",
    "audio",
    "video",
    "rtpmap",
    "fmtp",
    "ptime",
    "maxptime",
    "rtcp",
    "rtcp-mux",
    "sendrecv",
    "sendonly",
    "inactive",
    "mid",
    "PCMU/8000",
    "opus/48000/2",
    "x/0",
    "-",
    "é",
    "\t",
    "\r",
    "\x00",
    "=",
    "AS",
    "20",
    "20.5",
    "0-16",
    "\n",
    "1.2.3.4/127/3",
    "a" * 70,
]
fragment_text = st.lists(st.sampled_from(FRAGMENTS), max_size=8).map("".join)
# Mostly well-formed values per line type, with a fragment-built value sometimes.
LINE_VALUES = {
    "o": [
        "- 1 2 IN IP4 10.0.0.1",
        "alice 2890844526 2890844526 IN IP4 host.atlanta.example.com",
        "u 1 2 IN IP6 ::1",
    ],
    "c": ["IN IP4 10.0.0.1", "IN IP6 ::1", "IN IP4 0.0.0.0", "IN IP4 224.2.1.1/127/3"],
    "t": ["0 0", "3034423619 3042462419"],
    "b": ["AS:64", "CT:128"],
    "m": [
        "audio 6000 RTP/AVP 0 8 101",
        "audio 0 RTP/AVP 0",
        "video 51372/2 RTP/AVP 31 32",
        "application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "audio 9 UDP/TLS/RTP/SAVPF 111 0 127",
    ],
    "a": [
        "rtpmap:0 PCMU/8000",
        "rtpmap:101 telephone-event/8000",
        "rtpmap:96 opus/48000/2",
        "fmtp:101 0-16",
        "ptime:20",
        "maxptime:40",
        "rtcp:9 IN IP4 0.0.0.0",
        "rtcp-mux",
        "sendrecv",
        "recvonly",
        "mid:0",
        "ice-ufrag:abc",
        "ssrc:1 cname:x",
        "group:BUNDLE 0",
    ],
}
line_type = st.sampled_from("vosmcatbkiuezprx")


ATTRIBUTE_NAMES = [
    "rtpmap",
    "fmtp",
    "ptime",
    "maxptime",
    "rtcp",
    "rtcp-mux",
    "sendrecv",
    "sendonly",
    "recvonly",
    "inactive",
    "mid",
    "ice-ufrag",
    "ssrc",
    "x" * 64,
    "x" * 65,
    "bad name",
    "",
]
ATTRIBUTE_VALUES = [
    "0 PCMU/8000",
    "101 telephone-event/8000",
    "96 opus/48000/2",
    "128 X/8000",
    "7 x/0",
    "101 0-16",
    "101",
    "101 ",
    "20",
    "0",
    "20.5",
    "-1",
    "1e3",
    "9 IN IP4 0.0.0.0",
    "70000",
    "9 IN",
    "0",
    "",
]
attribute_text = st.one_of(
    st.sampled_from(LINE_VALUES["a"]),
    st.sampled_from(LINE_VALUES["a"]),
    st.sampled_from(ATTRIBUTE_NAMES),
    st.builds(lambda n, v: f"{n}:{v}", st.sampled_from(ATTRIBUTE_NAMES), st.sampled_from(ATTRIBUTE_VALUES)),
    st.builds(lambda n, v: f"{n}:{v}", st.sampled_from(ATTRIBUTE_NAMES), fragment_text),
)
PORTS = [
    "0",
    "9",
    "6000",
    "65535",
    "65536",
    "99999",
    "00080",
    "123456",
    "6000/2",
    "6000/",
    "6000/x",
    "-1",
    "",
]
PROTOS = [
    "RTP/AVP",
    "RTP/AVPF",
    "RTP/SAVP",
    "RTP/SAVPF",
    "UDP/TLS/RTP/SAVP",
    "UDP/TLS/RTP/SAVPF",
    "UDP/TLS/RTP/AVP",
    "RTP/AVP/TCP",
    "TCP/MSRP",
    "UDP/DTLS/SCTP",
    "RTP//AVP",
    "",
]
FORMATS = ["0", "8", "101", "127", "128", "007", "0127", "1000", "96", "x", "webrtc-datachannel", "", "1é"]
MEDIA_TYPES = ["audio", "video", "application", "bad media", ""]
ORIGIN_CHOICES = [
    ["-", "alice", "", "a\tb"],
    ["1", "2890844526", "0", "x", "1" * 33, ""],
    ["2", "1" * 32, "1.5", ""],
    ["IN", "I N", "", "é"],
    ["IP4", "IP6", "IP 4"],
    ["10.0.0.1", "::1", "host.example", "[::1]", "a b", "x@y", ""],
]
CONNECTION_CHOICES = [
    ["IN", "", "I\tN"],
    ["IP4", "IP6", "é"],
    ["10.0.0.1", "0.0.0.0", "::", "224.2.1.1/127/3", "x y", "", "a,b"],
]
TIMINGS = ["0 0", "1 2", "00 01", "0", "0 0 0", "x 0", "1" * 33 + " 0", ""]


def mostly_first(choices: list[str]) -> st.SearchStrategy[str]:
    """The first (valid) choice nine times in ten, so that a generated body gets past its early lines."""
    return st.integers(0, 9).flatmap(lambda n: st.just(choices[0]) if n else st.sampled_from(choices))


m_line_text = st.builds(
    lambda media, port, proto, formats: " ".join([media, port, proto, *formats]),
    mostly_first(MEDIA_TYPES),
    mostly_first(PORTS[2:] + PORTS[:2]),
    st.sampled_from(PROTOS),
    st.lists(mostly_first(FORMATS), max_size=5),
)
ORIGIN_FIELDS = st.tuples(*(mostly_first(choices) for choices in ORIGIN_CHOICES))
connection_text = st.tuples(*(mostly_first(choices) for choices in CONNECTION_CHOICES)).map(" ".join)
timing_text = mostly_first(TIMINGS)


@st.composite
def generated_sdp(draw: st.DrawFn) -> str | bytes:
    """A body assembled from line values that are mostly valid and sometimes not, in random order."""
    lines = ["v=" + draw(st.sampled_from(["0", "0", "0", "1"])), "o=" + " ".join(draw(ORIGIN_FIELDS))]
    lines.append("s=" + draw(st.sampled_from(["-", "-", "call", ""])))
    session = [
        "t=" + draw(timing_text),
        *(["c=" + draw(connection_text)] if draw(st.booleans()) else []),
        *draw(
            st.lists(
                st.sampled_from(
                    [
                        "i=info",
                        "u=http://x",
                        "e=a@b",
                        "p=+1",
                        "z=0 0",
                        "k=clear:x",
                        "r=1 2",
                        "b=AS:64",
                        "b=X",
                        "i=again",
                        "v=0",
                        "c=IN IP4 10.0.0.1",
                    ]
                ),
                max_size=3,
            )
        ),
        *["a=" + value for value in draw(st.lists(attribute_text, max_size=3))],
    ]
    lines += draw(st.permutations(session))
    for _ in range(draw(st.integers(0, 3))):
        section = [
            *["a=" + value for value in draw(st.lists(attribute_text, max_size=6))],
            *draw(
                st.lists(
                    st.sampled_from(
                        ["i=media", "b=AS:32", "k=prompt", "i=again", "c=IN IP4 10.0.0.2", "t=0 0", "k=x"]
                    ),
                    max_size=3,
                )
            ),
            *(["c=" + draw(connection_text)] if draw(st.booleans()) else []),
        ]
        lines.append("m=" + draw(m_line_text))
        lines += draw(st.permutations(section))
    for _ in range(draw(st.integers(0, 2))):
        value = draw(fragment_text)
        lines.insert(draw(st.integers(0, len(lines))), f"{draw(line_type)}={value}")
    ending = draw(st.sampled_from(["\r\n", "\n", "\r\n\r\n", "", "\r", "\n\r", "\r\r\n"]))
    separator = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    text = separator.join(lines) + ending
    return text.encode() if draw(st.booleans()) else text


@st.composite
def mutated_corpus(draw: st.DrawFn) -> str:
    """A real description with a few lines replaced, deleted, duplicated or spliced with fragments."""
    lines = draw(st.sampled_from(CORPUS)).split("\r\n")
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["value", "splice", "delete", "duplicate", "type"]))
        if action == "value":
            lines[index] = lines[index][:2] + draw(fragment_text)
        elif action == "splice":
            cut = draw(st.integers(0, len(lines[index])))
            lines[index] = lines[index][:cut] + draw(fragment_text) + lines[index][cut:]
        elif action == "delete":
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, lines[index])
        else:
            lines[index] = draw(line_type) + lines[index][1:]
        if not lines:
            lines = [""]
    return "\r\n".join(lines)


def assert_parses_the_same(data: str | bytes) -> None:
    expected, actual = outcome(lambda: ref_parse(data)), outcome(lambda: SessionDescription.parse(data))
    assert actual == expected
    if actual[0] == "ok":
        parsed: SessionDescription = actual[1]
        assert str(parsed) == "".join(line + "\r\n" for line in ref_session_lines(parsed))
        assert list(parsed.lines()) == ref_session_lines(parsed)
        for media in parsed.media:
            assert list(media.lines()) == ref_media_lines(media)
            assert outcome(media.codecs) == outcome(functools.partial(ref_codecs, media))


# ---- properties ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", CORPUS)
def test_corpus_parses_renders_and_lists_codecs_as_before(text: str) -> None:
    assert_parses_the_same(text)
    assert_parses_the_same(text.replace("\r\n", "\n"))
    assert_parses_the_same(text.encode())


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(generated_sdp())
def test_generated_descriptions_parse_the_same_or_fail_with_the_same_message(data: str | bytes) -> None:
    assert_parses_the_same(data)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_corpus())
def test_mutated_corpus_parses_the_same_or_fails_with_the_same_message(text: str) -> None:
    assert_parses_the_same(text)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_arbitrary_input_fails_with_the_same_message(data: str | bytes) -> None:
    assert_parses_the_same(data)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(LINE_VALUES)), st.one_of(fragment_text, st.text(max_size=30)), st.data())
def test_line_parsers_called_directly_agree(kind: str, noise: str, data: st.DataObject) -> None:
    # Public classmethods get text that never went through the line splitter (newlines included).
    structured = {
        "o": ORIGIN_FIELDS.map(" ".join),
        "c": connection_text,
        "t": timing_text,
        "m": m_line_text,
        "a": attribute_text,
        "b": st.sampled_from(["AS:64", "AS:", "A S:1", "AS:x"]),
    }[kind]
    value = data.draw(
        st.one_of(st.just(noise), structured, st.sampled_from(LINE_VALUES[kind]).map(lambda v: v + noise))
    )
    pairs: dict[str, tuple[Callable[[str], Any], Callable[[str], Any]]] = {
        "o": (Origin.parse, ref_origin),
        "c": (Connection.parse, ref_connection),
        "t": (Timing.parse, ref_timing),
        "m": (MediaDescription.parse_m_line, ref_m_line),
        "a": (Attribute.parse, ref_attribute),
        "b": (Bandwidth.parse, Bandwidth.parse),
    }
    new, old = pairs[kind]
    assert outcome(lambda: new(value)) == outcome(lambda: old(value))


def exhaustive_line_values() -> list[tuple[str, str]]:
    """Every combination of the field values above, per line parser (a few ten thousand, each cheap)."""
    values = [("a", name) for name in ATTRIBUTE_NAMES]
    values += [("a", f"{name}:{value}") for name in ATTRIBUTE_NAMES for value in ATTRIBUTE_VALUES]
    values += [("o", " ".join(fields)) for fields in itertools.product(*ORIGIN_CHOICES)]
    values += [("c", " ".join(fields)) for fields in itertools.product(*CONNECTION_CHOICES)]
    values += [("t", value) for value in TIMINGS]
    format_lists = [
        [],
        *([fmt] for fmt in FORMATS),
        *([fmt, "0"] for fmt in FORMATS),
        *(["8", fmt] for fmt in FORMATS),
    ]
    values += [
        ("m", " ".join([media, port, proto, *formats]))
        for media, port, proto, formats in itertools.product(MEDIA_TYPES, PORTS, PROTOS, format_lists)
    ]
    return values


def test_line_parsers_agree_on_every_combination_of_field_values() -> None:
    pairs: dict[str, tuple[Callable[[str], Any], Callable[[str], Any]]] = {
        "o": (Origin.parse, ref_origin),
        "c": (Connection.parse, ref_connection),
        "t": (Timing.parse, ref_timing),
        "m": (MediaDescription.parse_m_line, ref_m_line),
        "a": (Attribute.parse, ref_attribute),
    }
    mismatches = []
    for kind, value in exhaustive_line_values():
        new, old = pairs[kind]
        expected = outcome(functools.partial(old, value))
        if outcome(functools.partial(new, value)) != expected:
            mismatches.append((kind, value))
        # The same value a second time: a cached answer must equal the first one.
        if outcome(functools.partial(new, value)) != expected:
            mismatches.append((kind, value))
    assert mismatches == []


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "append-format",
                "drop-format",
                "set-value",
                "drop-attribute",
                "add-rtpmap",
                "add-fmtp",
                "proto",
                "media",
                "bad-rtpmap",
                "none-value",
            ]
        ),
        st.integers(0, 40),
        st.sampled_from(["0", "8", "9", "18", "96", "101", "111", "126", "13"]),
    ),
    max_size=8,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS), MUTATIONS)
def test_codecs_follow_every_mutation_of_the_section(
    text: str, mutations: list[tuple[str, int, str]]
) -> None:
    description = SessionDescription.parse(text)
    media = description.media[0]
    assert media.codecs() == ref_codecs(media)
    for action, index, payload_type in mutations:
        attributes = media.attributes
        if action == "append-format":
            media.formats.append(payload_type)
        elif action == "drop-format" and media.formats:
            del media.formats[index % len(media.formats)]
        elif action == "set-value" and attributes:
            at = index % len(attributes)  # attributes are immutable: a new value is a new attribute
            attributes[at] = Attribute(attributes[at].name, f"{payload_type} opus/48000/2")
        elif action == "drop-attribute" and attributes:
            del attributes[index % len(attributes)]
        elif action == "add-rtpmap":
            attributes.insert(
                index % (len(attributes) + 1), Attribute("rtpmap", f"{payload_type} X{index}/16000")
            )
        elif action == "add-fmtp":
            attributes.append(Attribute("fmtp", f"{payload_type}  mode={index} "))
        elif action == "proto":
            media.proto = ["RTP/AVP", "RTP/SAVPF", "TCP/MSRP"][index % 3]
        elif action == "media":
            media.media = ["audio", "video"][index % 2]
        elif action == "bad-rtpmap":
            attributes.append(Attribute("rtpmap", f"{payload_type} broken"))
        elif action == "none-value":
            attributes.append(Attribute(["rtpmap", "fmtp"][index % 2], None))
        assert outcome(media.codecs) == outcome(functools.partial(ref_codecs, media))
        returned = outcome(media.codecs)
        if returned[0] == "ok":
            returned[1].clear()  # the caller owns the list: emptying it must not touch the next answer
            assert outcome(media.codecs) == outcome(functools.partial(ref_codecs, media))


codec_strategy = st.builds(
    Codec,
    st.sampled_from(["PCMU", "pcmu", "PCMA", "opus", "OPUS", "telephone-event", "CN", "G722", "red"]),
    st.sampled_from([8000, 16000, 48000]),
    st.sampled_from([1, 2]),
    st.one_of(st.none(), st.integers(0, 127)),
    st.one_of(st.none(), st.sampled_from(["0-16", "minptime=10"])),
)


@settings(max_examples=400)
@given(st.lists(codec_strategy, max_size=8), st.lists(codec_strategy, max_size=6))
def test_codec_matching_is_unchanged(offered: list[Codec], supported: list[Codec]) -> None:
    offered = [Codec(c.name, c.clock_rate, c.channels, c.payload_type or 0, c.fmtp) for c in offered]
    assert sdp._match_codecs(offered, supported) == ref_match_codecs(offered, supported)


def ref_common_codecs(ours: MediaDescription, theirs: MediaDescription) -> list[Codec]:
    our_codecs = ours.codecs()
    return [codec for codec in theirs.codecs() if any(codec.matches(mine) for mine in our_codecs)]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS), st.sampled_from(CORPUS), st.lists(codec_strategy, min_size=1, max_size=6))
def test_stream_params_pick_the_codecs_both_sides_listed(
    offer_text: str, theirs_text: str, codecs: list[Codec]
) -> None:
    local = LocalMedia("ep", "10.0.0.1", 30000, 30001)
    offer = SessionDescription.parse(offer_text)
    try:
        ours = media_sdp.build_answer(offer, local, codecs, "1")
    except ValueError:
        return
    remote = SessionDescription.parse(theirs_text)
    params = media_sdp.stream_params(ours, remote)
    pair = media_sdp._audio_pair(ours, remote)
    common = [] if pair is None else ref_common_codecs(*pair)
    voice = [c for c in common if c.is_voice]
    if not voice:
        assert params is None
        return
    assert params is not None
    assert [f.payload_type for f in params.formats] == [c.payload_type for c in voice]
    assert params.send_format.payload_type == voice[0].payload_type
    events = next((c for c in common if c.name.lower() == "telephone-event"), None)
    assert (params.telephone_event is None) == (events is None)


def test_origin_tracker_content_ignores_only_the_origin_line() -> None:
    description = SessionDescription.parse(CHROME_OFFER)
    expected = "\r\n".join(line for line in ref_session_lines(description) if not line.startswith("o="))
    assert sdp.OriginTracker._content_of(description) == expected
    tracker = sdp.OriginTracker(Origin("uc-edge", "1", 1, "10.0.0.1"))
    tracker.stamp(description)
    tracker.stamp(description)
    assert tracker.origin.session_version == 1
    description.media[0].attributes.append(Attribute("sendonly"))
    tracker.stamp(description)
    assert tracker.origin.session_version == 2


def test_call_codecs_negotiate_the_bench_offer_as_before() -> None:
    from bench.suites.call_cost import SDP_OFFER

    offer = SessionDescription.parse(SDP_OFFER)
    (decision,) = sdp.negotiate(offer, CALL_CODECS)
    assert decision.codecs == ref_match_codecs(ref_codecs(offer.media[0]), CALL_CODECS)
