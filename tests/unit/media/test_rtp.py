"""RTP packets, header extensions, demux and sequence continuity (media/rtp.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.rtp import (
    ONE_BYTE_EXTENSION_PROFILE,
    TWO_BYTE_EXTENSION_PROFILE,
    RtpPacket,
    SequenceRewriter,
    classify_datagram,
    extend_sequence,
    extend_timestamp,
    is_rtcp,
    parse_header,
    parse_header_extensions,
    rewrite_header,
    seq_diff,
    seq_gt,
    seq_lt,
    serialize_header_extensions,
    ts_diff,
)

DATA = Path(__file__).parents[2] / "data" / "rtp"
RTP_VECTORS = ["pcmu_marker.bin", "opus_csrc_ext_padding.bin", "twobyte_ext.bin", "telephone_event_end.bin"]


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.mark.parametrize("name", RTP_VECTORS)
def test_vectors_round_trip(name: str) -> None:
    data = load(name)
    assert bytes(RtpPacket.parse(data)) == data


def test_pcmu_fields() -> None:
    packet = RtpPacket.parse(load("pcmu_marker.bin"))
    assert packet.marker is True
    assert packet.payload_type == 0
    assert packet.sequence_number == 0xFFFF
    assert packet.timestamp == 0x1F400
    assert packet.ssrc == 0x12345678
    assert len(packet.payload) == 160
    assert packet.csrc == ()
    assert packet.extension_profile is None
    assert packet.padding_size == 0


def test_opus_fields_csrc_extension_padding() -> None:
    packet = RtpPacket.parse(load("opus_csrc_ext_padding.bin"))
    assert packet.payload_type == 111
    assert packet.marker is False
    assert packet.csrc == (0x11111111, 0x22222222)
    assert packet.extension_profile == ONE_BYTE_EXTENSION_PROFILE
    assert parse_header_extensions(packet.extension_profile, packet.extension) == [(1, b"\x85"), (3, b"0")]
    assert packet.payload == bytes(range(40))
    assert packet.padding_size == 4


def test_two_byte_extension_elements() -> None:
    packet = RtpPacket.parse(load("twobyte_ext.bin"))
    assert packet.extension_profile == TWO_BYTE_EXTENSION_PROFILE
    assert parse_header_extensions(packet.extension_profile, packet.extension) == [
        (20, b"\x01\x02\x03"),
        (2, b""),
    ]
    assert packet.payload == b"payload!"


def test_built_packet_round_trips() -> None:
    profile, extension = serialize_header_extensions([(5, b"\x01\x02"), (14, b"x" * 16)])
    packet = RtpPacket(
        payload_type=8,
        sequence_number=65535,
        timestamp=0xFFFFFFFF,
        ssrc=1,
        payload=b"\xd5" * 80,
        marker=True,
        csrc=tuple(range(15)),
        extension_profile=profile,
        extension=extension,
        padding_size=255,
    )
    data = bytes(packet)
    assert RtpPacket.parse(data) == packet
    assert len(data) % 1 == 0 and data[0] == 0x80 | 0x20 | 0x10 | 15


def test_extension_serialisation_falls_back_to_two_byte() -> None:
    profile, body = serialize_header_extensions([(1, b"a"), (200, b"b" * 20)])
    assert profile == TWO_BYTE_EXTENSION_PROFILE
    assert len(body) % 4 == 0
    assert parse_header_extensions(profile, body) == [(1, b"a"), (200, b"b" * 20)]
    profile, body = serialize_header_extensions([(1, b"a"), (2, b"")])
    assert profile == TWO_BYTE_EXTENSION_PROFILE  # zero-length values need the two-byte form


def test_one_byte_extension_stops_at_id_15() -> None:
    assert parse_header_extensions(ONE_BYTE_EXTENSION_PROFILE, bytes([0x10, 0xAA, 0xF0, 0x20])) == [
        (1, b"\xaa")
    ]


def test_parse_header_matches_parse() -> None:
    data = load("pcmu_marker.bin")
    assert parse_header(data) == RtpPacket.parse(data).header()


# -- errors ---------------------------------------------------------------------------------------------

FIXED = struct.pack("!BBHII", 0x80, 0, 1, 2, 3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "RTP packet is too short"),
        (FIXED[:11], "RTP packet is too short"),
        (b"\x40" + FIXED[1:], "RTP version must be 2"),
        (b"\xc0" + FIXED[1:], "RTP version must be 2"),
        (b"\xa0" + FIXED[1:] + b"\x00", "RTP padding length is invalid"),
        (b"\xa0" + FIXED[1:] + b"ab\x04", "RTP padding length is invalid"),
        (b"\x82" + FIXED[1:] + b"\x00\x00\x00\x01", "RTP CSRC list is truncated"),
        (b"\x90" + FIXED[1:] + b"\xbe\xde", "RTP extension header is truncated"),
        (b"\x90" + FIXED[1:] + b"\xbe\xde\x00\x02" + bytes(4), "RTP extension length is invalid"),
        # Padding that eats into the extension makes the extension too long for what is left.
        (b"\xb0" + FIXED[1:] + b"\xbe\xde\x00\x01" + b"\x00\x00\x00\x04", "RTP extension length is invalid"),
    ],
)
def test_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        RtpPacket.parse(data)


def test_parse_header_errors() -> None:
    with pytest.raises(ValueError, match=r"^RTP packet is too short$"):
        parse_header(b"\x80\x00")
    with pytest.raises(ValueError, match=r"^RTP version must be 2$"):
        parse_header(b"\x00" + FIXED[1:])


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (RtpPacket(payload_type=128), "RTP payload type must be in 0..127"),
        (RtpPacket(csrc=tuple(range(16))), "RTP CSRC count must be at most 15"),
        (RtpPacket(padding_size=256), "RTP padding length is invalid"),
        (
            RtpPacket(extension_profile=0xBEDE, extension=b"abc"),
            "RTP extension length must be a multiple of 4",
        ),
        (RtpPacket(sequence_number=65536), "RTP header field is out of range"),
        (RtpPacket(ssrc=-1), "RTP header field is out of range"),
    ],
)
def test_serialise_errors(packet: RtpPacket, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}"):
        bytes(packet)


@pytest.mark.parametrize(
    ("profile", "body", "message"),
    [
        (ONE_BYTE_EXTENSION_PROFILE, bytes([0x13, 1, 2]), "RTP one-byte extension element is truncated"),
        (TWO_BYTE_EXTENSION_PROFILE, bytes([7]), "RTP two-byte extension element is truncated"),
        (TWO_BYTE_EXTENSION_PROFILE, bytes([7, 4, 1]), "RTP two-byte extension element is truncated"),
        (0x1234, b"", "RTP extension profile is not RFC 8285"),
    ],
)
def test_extension_errors(profile: int, body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        parse_header_extensions(profile, body)


@given(st.binary(max_size=200))
@settings(max_examples=600, deadline=None)
def test_parse_only_raises_value_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except ValueError:
        return
    # Whatever parses serialises back to the same octets, except for non-zero padding filler.
    again = bytes(packet)
    assert len(again) == len(data)
    assert RtpPacket.parse(again) == packet


@given(
    st.builds(
        RtpPacket,
        payload_type=st.integers(0, 127),
        sequence_number=st.integers(0, 0xFFFF),
        timestamp=st.integers(0, 0xFFFFFFFF),
        ssrc=st.integers(0, 0xFFFFFFFF),
        payload=st.binary(max_size=64),
        marker=st.booleans(),
        csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
        extension_profile=st.none() | st.integers(0, 0xFFFF),
        extension=st.binary(max_size=16).map(lambda b: b + bytes(-len(b) % 4)),
        padding_size=st.integers(0, 255),
    )
)
@settings(max_examples=300, deadline=None)
def test_built_packets_round_trip(packet: RtpPacket) -> None:
    if packet.extension_profile is None:
        packet.extension = b""
    assert RtpPacket.parse(bytes(packet)) == packet


@given(st.binary(max_size=64), st.integers(0, 0xFFFF))
@settings(max_examples=200, deadline=None)
def test_extension_parsers_only_raise_value_error(body: bytes, profile: int) -> None:
    try:
        parse_header_extensions(profile, body)
    except ValueError:
        pass


# -- demux ----------------------------------------------------------------------------------------------


def test_is_rtcp_demux() -> None:
    assert not is_rtcp(load("pcmu_marker.bin"))  # PT 0 with marker: second octet 128
    for name in ["rtcp_sr_sdes.bin", "rtcp_rr_sdes_bye.bin", "rtcp_app_pli_padding.bin"]:
        assert is_rtcp(load(name))
    assert not is_rtcp(bytes([0x80, 0x80 | 63]))  # PT 63 + marker = 191
    assert is_rtcp(bytes([0x80, 192]))
    assert is_rtcp(bytes([0x80, 223]))
    assert not is_rtcp(bytes([0x80, 224]))
    assert not is_rtcp(b"\x80")


def test_classify_datagram() -> None:
    assert classify_datagram(b"\x00\x01rest") == "stun"
    assert classify_datagram(b"\x16\xfe\xfd") == "dtls"
    assert classify_datagram(load("pcmu_marker.bin")) == "rtp"
    assert classify_datagram(load("rtcp_sr_sdes.bin")) == "rtcp"
    assert classify_datagram(b"") == "unknown"
    assert classify_datagram(b"\x50") == "unknown"


# -- sequence helpers -----------------------------------------------------------------------------------


def test_sequence_arithmetic_wraps() -> None:
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(100, 100) == 0
    assert seq_diff(0x8000, 0) == -0x8000
    assert seq_lt(65535, 0) and seq_gt(0, 65535)
    assert not seq_lt(5, 5)
    assert ts_diff(0, 0xFFFFFFFF) == 1
    assert ts_diff(160, 0xFFFFFF60) == 320


def test_extend_sequence_counts_cycles() -> None:
    highest = 65534
    extended = []
    for seq in [65535, 0, 1, 65533, 2]:
        value = extend_sequence(seq, highest)
        extended.append(value)
        highest = max(highest, value)
    assert extended == [65535, 65536, 65537, 65533, 65538]
    assert extend_timestamp(100, 0xFFFFFF00) == 0x100000064


def test_rewrite_header_only_touches_fixed_fields() -> None:
    data = load("opus_csrc_ext_padding.bin")
    out = rewrite_header(data, 7, 8, 9, True)
    packet = RtpPacket.parse(out)
    original = RtpPacket.parse(data)
    assert (packet.sequence_number, packet.timestamp, packet.ssrc, packet.marker) == (7, 8, 9, True)
    assert (packet.payload, packet.csrc, packet.extension, packet.padding_size) == (
        original.payload,
        original.csrc,
        original.extension,
        original.padding_size,
    )


# -- sequence rewriter ----------------------------------------------------------------------------------


def stream(
    ssrc: int, first_seq: int, first_ts: int, count: int, start: float
) -> list[tuple[RtpPacket, float]]:
    return [
        (
            RtpPacket(0, (first_seq + i) & 0xFFFF, (first_ts + 160 * i) & 0xFFFFFFFF, ssrc, b"x"),
            start + 0.02 * i,
        )
        for i in range(count)
    ]


def test_rewriter_keeps_one_ssrc_and_continuity_across_source_change() -> None:
    rewriter = SequenceRewriter(0xABCDEF, 8000, initial_sequence=1000, initial_timestamp=5000)
    out = []
    for packet, now in stream(0x1, 65530, 0xFFFFFF00, 10, 0.0):
        result = rewriter.rewrite_packet(packet, now)
        assert result is not None
        out.append(result)
    assert [p.sequence_number for p in out] == list(range(1000, 1010))
    assert [p.timestamp for p in out] == [5000 + 160 * i for i in range(10)]
    assert {p.ssrc for p in out} == {0xABCDEF}
    assert out[0].marker is True  # the first packet anchors the stream
    assert not any(p.marker for p in out[1:])
    # A re-INVITE brings a new source 100 ms after the last packet (0.18 s): new SSRC, seq and ts.
    second = []
    for packet, now in stream(0x2, 17, 999, 5, 0.28):
        result = rewriter.rewrite_packet(packet, now)
        assert result is not None
        second.append(result)
    assert [p.sequence_number for p in second] == list(range(1010, 1015))
    assert second[0].timestamp == 5000 + 160 * 9 + 800  # 0.1 s of wall time at 8 kHz
    assert [p.timestamp - second[0].timestamp for p in second] == [160 * i for i in range(5)]
    assert second[0].marker is True
    assert rewriter.resyncs == 1


def test_rewriter_preserves_gaps_and_reordering_within_a_source() -> None:
    rewriter = SequenceRewriter(1, 8000, initial_sequence=65535)
    packets = stream(0x9, 100, 0, 6, 0.0)
    order = [0, 2, 1, 5]  # 3 and 4 lost, 1 and 2 swapped
    outs = []
    for index in order:
        result = rewriter.rewrite(
            packets[index][0].sequence_number, packets[index][0].timestamp, 0x9, False, packets[index][1]
        )
        assert result is not None
        outs.append(result.sequence_number)
    assert outs == [65535, 1, 0, 4]


def test_rewriter_resyncs_on_explicit_change_and_big_jump() -> None:
    rewriter = SequenceRewriter(1, 8000, initial_sequence=0, initial_timestamp=0)
    assert rewriter.rewrite(10, 1000, 5, False, 0.0) == (0, 0, 1, True)
    assert rewriter.rewrite(11, 1160, 5, False, 0.02) == (1, 160, 1, False)
    rewriter.source_changed()  # same SSRC, but the far end restarted its counters
    assert rewriter.rewrite(500, 77, 5, False, 0.04) == (2, 320, 1, True)
    # A jump of more than 3000 sequence numbers is a new stream, not loss.
    assert rewriter.rewrite(9000, 12345, 5, False, 0.06) == (3, 480, 1, True)
    assert rewriter.rewrite(9001, 12505, 5, False, 0.08) == (4, 640, 1, False)


def test_rewriter_drops_stragglers_of_the_replaced_source() -> None:
    rewriter = SequenceRewriter(1, 8000)
    assert rewriter.rewrite(10, 0, 0xA, False, 0.0) is not None
    assert rewriter.rewrite(12, 320, 0xA, False, 0.02) is not None
    assert rewriter.rewrite(50, 0, 0xB, False, 0.1) is not None
    assert rewriter.rewrite(11, 160, 0xA, False, 0.12) is None  # reordered, older than what we sent
    assert rewriter.stragglers_dropped == 1
    # A newer packet of the old source means it resumed (a prompt from B ended): switch back at once.
    header = rewriter.rewrite(13, 480, 0xA, False, 0.3)
    assert header is not None and header.marker and header.sequence_number == 4
    # Long after a switch, even an old-looking sequence number is a genuine new source.
    assert rewriter.rewrite(51, 160, 0xB, False, 0.32) is not None
    header = rewriter.rewrite(5, 0, 0xA, False, 5.0)
    assert header is not None and header.marker


def test_rewrite_bytes_matches_rewrite_packet() -> None:
    data = load("pcmu_marker.bin")
    first = SequenceRewriter(0x55, 8000, initial_sequence=9)
    second = SequenceRewriter(0x55, 8000, initial_sequence=9)
    out = first.rewrite_bytes(data, 1.0)
    packet = second.rewrite_packet(RtpPacket.parse(data), 1.0)
    assert out is not None and packet is not None
    assert out == bytes(packet)
    with pytest.raises(ValueError, match=r"^RTP version must be 2$"):
        first.rewrite_bytes(b"\x00" * 12, 1.0)


@pytest.mark.parametrize(
    ("elements", "message"),
    [
        ([(0, b"x" * 17)], "RTP extension element id must be in 1..255"),
        ([(256, b"x")], "RTP extension element id must be in 1..255"),
        ([(1, b"x" * 256)], "RTP extension element value is too long"),
    ],
)
def test_extension_serialisation_errors(elements: list[tuple[int, bytes]], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        serialize_header_extensions(elements)


def test_rewriter_needs_a_positive_clock_rate() -> None:
    with pytest.raises(ValueError, match=r"^clock rate must be positive$"):
        SequenceRewriter(1, 0)


_STEP = st.tuples(
    st.sampled_from([1, 1, 1, 1, 2, -1, 0, 5000, -40000]),  # sequence step: mostly in order
    st.sampled_from([0xA, 0xA, 0xA, 0xB]),  # source SSRC: now and then another source
    st.booleans(),  # marker
    st.integers(0, 20),  # 0: signalling changed the source (re-INVITE)
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_STEP, min_size=1, max_size=60), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF))
def test_rewrite_into_matches_rewrite(steps: list[tuple[int, int, bool, int]], seq: int, ts: int) -> None:
    """The relay's in-place rewrite (fast path included) writes what ``rewrite`` says, state alike."""
    reference = SequenceRewriter(0x5EED, 8000, initial_sequence=100, initial_timestamp=1000)
    fast = SequenceRewriter(0x5EED, 8000, initial_sequence=100, initial_timestamp=1000)
    now = 0.0
    for step, ssrc, marker, change in steps:
        seq = (seq + step) & 0xFFFF
        ts = (ts + 160 * step) & 0xFFFFFFFF
        now += 0.02
        if change == 0:
            reference.source_changed()
            fast.source_changed()
        data = bytes(RtpPacket(0, seq, ts, ssrc, b"\x55" * 4, marker))
        expected = reference.rewrite(seq, ts, ssrc, marker, now)
        buffer = bytearray(data)
        out_timestamp = fast.rewrite_into(buffer, seq, ts, ssrc, marker, 8, now)
        if expected is None:
            assert out_timestamp == -1 and buffer == data
            continue
        packet = RtpPacket.parse(bytes(buffer))
        assert (packet.sequence_number, packet.timestamp, packet.ssrc, packet.marker) == tuple(expected)
        assert packet.payload_type == 8 and packet.payload == b"\x55" * 4
        assert out_timestamp == expected.timestamp
        for name in SequenceRewriter.__slots__:  # the whole state, counters included
            assert getattr(fast, name) == getattr(reference, name), name
