"""RTCP packets and compound datagrams (media/rtcp.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.rtcp import (
    ReportBlock,
    RtcpApp,
    RtcpBye,
    RtcpReceiverReport,
    RtcpSenderReport,
    RtcpSourceDescription,
    RtcpUnknown,
    SdesChunk,
    build_receiver_report,
    build_sender_report,
    ntp_from_unix,
    ntp_middle32,
    parse_rtcp,
    serialize_rtcp,
    unix_from_ntp,
)

DATA = Path(__file__).parents[2] / "data" / "rtp"
RTCP_VECTORS = ["rtcp_sr_sdes.bin", "rtcp_rr_sdes_bye.bin", "rtcp_app_pli_padding.bin"]


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.mark.parametrize("name", RTCP_VECTORS)
def test_vectors_round_trip(name: str) -> None:
    data = load(name)
    assert serialize_rtcp(parse_rtcp(data)) == data


def test_sender_report_fields() -> None:
    sr, sdes = parse_rtcp(load("rtcp_sr_sdes.bin"))
    assert isinstance(sr, RtcpSenderReport)
    assert (sr.ssrc, sr.ntp_timestamp, sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (
        0x12345678,
        0xE8F0000080000000,
        160000,
        500,
        80000,
    )
    assert sr.reports == [ReportBlock(0xCAFEBABE, 12, 37, 0x10010, 55, 0x8000, 0x10000)]
    assert isinstance(sdes, RtcpSourceDescription)
    assert sdes.chunks[0].ssrc == 0x12345678
    assert sdes.chunks[0].cname == b"uc-edge@example.invalid"


def test_receiver_report_and_bye_fields() -> None:
    rr, sdes, bye = parse_rtcp(load("rtcp_rr_sdes_bye.bin"))
    assert isinstance(rr, RtcpReceiverReport)
    assert rr.reports[0].packets_lost == -3
    assert rr.reports[1].packets_lost == 8_388_607
    assert rr.reports[1].fraction_lost == 255
    assert isinstance(sdes, RtcpSourceDescription) and sdes.chunks[0].cname == b"leg-b"
    assert bye == RtcpBye([0x0A0B0C0D], b"shutdown")


def test_app_and_unknown_passthrough_with_padding() -> None:
    app, pli, rr = parse_rtcp(load("rtcp_app_pli_padding.bin"))
    assert app == RtcpApp(3, 1, b"UCED", b"\x01\x02\x03\x04")
    assert pli == RtcpUnknown(206, 1, struct.pack("!II", 1, 2))
    assert rr == RtcpReceiverReport(1, [], b"", padding_size=8)


def test_single_packet_parse_classmethods() -> None:
    data = bytes(RtcpBye([1, 2], b"bye"))
    assert RtcpBye.parse(data) == RtcpBye([1, 2], b"bye")
    with pytest.raises(ValueError, match=r"^RTCP packet type 203 is not 201$"):
        RtcpReceiverReport.parse(data)
    with pytest.raises(ValueError, match=r"^RTCP packet length is invalid$"):
        RtcpBye.parse(data + data)
    assert RtcpUnknown.parse(data) == RtcpUnknown(203, 2, data[4:])


def header(count: int, packet_type: int, words: int, first: int = 0x80) -> bytes:
    return struct.pack("!BBH", first | count, packet_type, words)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "RTCP packet is too short"),
        (b"\x80\xc8\x00", "RTCP packet is too short"),
        (header(0, 201, 1, first=0x40) + bytes(4), "RTCP version must be 2"),
        (header(0, 201, 2) + bytes(4), "RTCP packet length is invalid"),
        (header(0, 201, 1, first=0xA0) + b"\x00\x00\x00\x00", "RTCP padding length is invalid"),
        (header(0, 201, 1, first=0xA0) + b"\x00\x00\x00\x05", "RTCP padding length is invalid"),
        (header(1, 200, 6) + bytes(24), "RTCP sender report length is invalid"),
        (header(0, 200, 5) + bytes(20), "RTCP sender report length is invalid"),
        (header(1, 201, 1) + bytes(4), "RTCP receiver report length is invalid"),
        (header(2, 203, 1) + bytes(4), "RTCP bye length is invalid"),
        (header(1, 203, 2) + bytes(4) + b"\x09abc", "RTCP bye length is invalid"),
        (header(1, 202, 0), "RTCP SDES chunk is truncated"),
        (header(1, 202, 1) + bytes(4), "RTCP SDES item is truncated"),
        (header(1, 202, 2) + bytes(4) + b"\x01\x09ab", "RTCP SDES item is truncated"),
        (
            header(1, 202, 3) + bytes(4) + b"\x01\x00\x00\x00" + b"\x00\x00\x00\x07",
            "RTCP SDES length is invalid",
        ),
        (header(0, 204, 1) + bytes(4), "RTCP app length is invalid"),
    ],
)
def test_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        parse_rtcp(data)


def test_sdes_item_ending_exactly_on_word_boundary_is_truncated() -> None:
    # Items fill the chunk to a word boundary with no null octet left: the end marker is missing.
    data = header(1, 202, 2) + bytes(4) + b"\x01\x02ab"
    with pytest.raises(ValueError, match=r"^RTCP SDES item is truncated$"):
        parse_rtcp(data)


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (RtcpReceiverReport(1, [ReportBlock(1, 0, 0, 0, 0)] * 32), "RTCP receiver report has more than 31"),
        (RtcpReceiverReport(1 << 32), "RTCP receiver report field is out of range"),
        (RtcpReceiverReport(1, [ReportBlock(1, 0, 1 << 23, 0, 0)]), "RTCP report block packets lost"),
        (RtcpReceiverReport(1, [ReportBlock(1, 256, 0, 0, 0)]), "RTCP report block field is out of range"),
        (RtcpSenderReport(1, 1 << 64, 0, 0, 0), "RTCP sender report field is out of range"),
        (RtcpBye([1], b"x" * 256), "RTCP bye reason is too long"),
        (RtcpBye([1 << 32]), "RTCP bye source is out of range"),
        (RtcpApp(1, 1, b"abc"), "RTCP app name must be 4 octets"),
        (RtcpApp(32, 1, b"abcd"), "RTCP app subtype must be in 0..31"),
        (RtcpApp(1, 1, b"abcd", b"x"), "RTCP app data length must be a multiple of 4"),
        (RtcpSourceDescription([SdesChunk(1, [(1, b"x" * 256)])]), "RTCP SDES item is too long"),
        (RtcpSourceDescription([SdesChunk(1, [(0, b"x")])]), "RTCP SDES item type must be in 1..255"),
        (RtcpReceiverReport(1, padding_size=3), "RTCP packet size must be a multiple of 4"),
        (RtcpReceiverReport(1, padding_size=256), "RTCP padding length is invalid"),
        (RtcpUnknown(205, 32, b""), "RTCP count must be in 0..31"),
    ],
)
def test_serialise_errors(packet: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}"):
        bytes(packet)  # type: ignore[call-overload]


@given(st.binary(max_size=160))
@settings(max_examples=600, deadline=None)
def test_parse_only_raises_value_error(data: bytes) -> None:
    try:
        packets = parse_rtcp(data)
    except ValueError:
        return
    reparsed = parse_rtcp(serialize_rtcp(packets))
    assert reparsed == packets


@given(st.binary(min_size=4, max_size=120))
@settings(max_examples=300, deadline=None)
def test_valid_header_random_body_only_raises_value_error(body: bytes) -> None:
    body = body[: len(body) - len(body) % 4]
    for packet_type in (200, 201, 202, 203, 204):
        for count in (0, 1, 2, 31):
            try:
                parse_rtcp(header(count, packet_type, len(body) // 4) + body)
            except ValueError:
                pass


report_blocks = st.builds(
    ReportBlock,
    ssrc=st.integers(0, 0xFFFFFFFF),
    fraction_lost=st.integers(0, 255),
    packets_lost=st.integers(-(1 << 23), (1 << 23) - 1),
    highest_sequence=st.integers(0, 0xFFFFFFFF),
    jitter=st.integers(0, 0xFFFFFFFF),
    lsr=st.integers(0, 0xFFFFFFFF),
    dlsr=st.integers(0, 0xFFFFFFFF),
)
words = st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4))
paddings = st.sampled_from([0, 4, 8, 252])
packets = st.one_of(
    st.builds(
        RtcpSenderReport,
        ssrc=st.integers(0, 0xFFFFFFFF),
        ntp_timestamp=st.integers(0, (1 << 64) - 1),
        rtp_timestamp=st.integers(0, 0xFFFFFFFF),
        packet_count=st.integers(0, 0xFFFFFFFF),
        octet_count=st.integers(0, 0xFFFFFFFF),
        reports=st.lists(report_blocks, max_size=3),
        extension=words,
        padding_size=paddings,
    ),
    st.builds(
        RtcpReceiverReport, st.integers(0, 0xFFFFFFFF), st.lists(report_blocks, max_size=3), words, paddings
    ),
    st.builds(
        RtcpSourceDescription,
        st.lists(
            st.builds(
                SdesChunk,
                st.integers(0, 0xFFFFFFFF),
                st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=20)), max_size=3),
            ),
            max_size=3,
        ),
        paddings,
    ),
    st.builds(
        RtcpBye,
        st.lists(st.integers(0, 0xFFFFFFFF), max_size=4),
        st.none() | st.binary(max_size=20),
        paddings,
    ),
    st.builds(
        RtcpApp, st.integers(0, 31), st.integers(0, 0xFFFFFFFF), st.binary(min_size=4, max_size=4), words
    ),
    st.builds(RtcpUnknown, st.integers(205, 255), st.integers(0, 31), words, paddings),
)


@given(st.lists(packets, min_size=1, max_size=4))
@settings(max_examples=300, deadline=None)
def test_built_compounds_round_trip(compound: list[object]) -> None:
    data = serialize_rtcp(compound)  # type: ignore[arg-type]
    assert parse_rtcp(data) == compound
    assert serialize_rtcp(parse_rtcp(data)) == data


def test_ntp_conversions() -> None:
    ntp = ntp_from_unix(1_700_000_000.5)
    assert ntp >> 32 == 1_700_000_000 + 2_208_988_800
    assert ntp & 0xFFFFFFFF == 1 << 31
    assert unix_from_ntp(ntp) == 1_700_000_000.5
    assert ntp_middle32(0x1234_5678_9ABC_DEF0) == 0x5678_9ABC


def test_build_receiver_report_splits_beyond_31_blocks() -> None:
    blocks = [ReportBlock(i, 0, 0, i, 0) for i in range(40)]
    compound = build_receiver_report(7, blocks, cname="leg@edge")
    assert [type(p) for p in compound] == [RtcpReceiverReport, RtcpReceiverReport, RtcpSourceDescription]
    first, second, sdes = compound
    assert isinstance(first, RtcpReceiverReport) and isinstance(second, RtcpReceiverReport)
    assert len(first.reports) == 31 and len(second.reports) == 9
    assert isinstance(sdes, RtcpSourceDescription) and sdes.chunks[0].cname == b"leg@edge"
    assert parse_rtcp(serialize_rtcp(compound)) == compound
    assert build_receiver_report(7, []) == [RtcpReceiverReport(7)]


def test_build_sender_report() -> None:
    compound = build_sender_report(
        9,
        wallclock=1_700_000_000.25,
        rtp_timestamp=(1 << 32) + 5,
        packet_count=3,
        octet_count=480,
        cname=b"x",
    )
    sr = compound[0]
    assert isinstance(sr, RtcpSenderReport)
    assert sr.rtp_timestamp == 5
    assert sr.ntp_timestamp == ntp_from_unix(1_700_000_000.25)
    assert (sr.packet_count, sr.octet_count, sr.reports) == (3, 480, [])
    assert parse_rtcp(serialize_rtcp(compound)) == compound


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (
            RtcpSenderReport(1, 0, 0, 0, 0, [ReportBlock(1, 0, 0, 0, 0)] * 32),
            "RTCP sender report has more than 31",
        ),
        (RtcpSourceDescription([SdesChunk(1)] * 32), "RTCP SDES has more than 31 chunks"),
        (RtcpBye(list(range(32))), "RTCP bye has more than 31 sources"),
        (RtcpUnknown(256, 0, b""), "RTCP packet type must be in 0..255"),
    ],
)
def test_serialise_limits(packet: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}"):
        bytes(packet)  # type: ignore[call-overload]


def test_report_block_parse_is_bounded() -> None:
    with pytest.raises(ValueError, match=r"^RTCP report block is truncated$"):
        ReportBlock.parse(bytes(23))
    assert ReportBlock.parse(bytes(30), offset=6) == ReportBlock(0, 0, 0, 0, 0)
