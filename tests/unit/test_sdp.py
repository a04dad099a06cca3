"""SDP model and RFC 3264 offer/answer."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.sdp import (
    DEFAULT_CODECS,
    Attribute,
    Codec,
    Connection,
    Direction,
    NoCommonCodecError,
    OfferStream,
    Origin,
    OriginTracker,
    RtcpAttribute,
    RtpMap,
    SessionDescription,
    create_answer,
    create_offer,
    negotiate,
)


def crlf(text: str) -> str:
    return "".join(line + "\r\n" for line in text.strip().splitlines())


SIPP_OFFER = crlf(
    """
v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""
)

BARESIP_OFFER = crlf(
    """
v=0
o=- 1993355436 2126768183 IN IP4 192.168.1.10
s=-
c=IN IP4 192.168.1.10
t=0 0
m=audio 10490 RTP/AVP 96 0 8 101
b=AS:64
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=rtcp:10491
a=sendrecv
a=label:1
a=ssrc:1528352125 cname:a1b2c3d4
a=rtcp-rsize
a=ptime:20
"""
)

CHROME_OFFER = crlf(
    """
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=extmap-allow-mixed
a=msid-semantic: WMS stream1
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1467250027 1 udp 2122260223 192.168.0.196 46243 typ host generation 0 network-id 1
a=ice-ufrag:Oyef
a=ice-pwd:7zCGeXnPpxq1Xfs/aThUZfRk
a=ice-options:trickle
a=fingerprint:sha-256 FINGERPRINT
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=sendrecv
a=msid:stream1 track1
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:3735928559 cname:4TOk42mSjXCkVIa6
"""
).replace(
    "FINGERPRINT",
    "49:66:12:17:0D:1C:91:AE:57:4C:C6:36:DD:D5:97:D2:7D:62:C9:9A:7F:B9:A3:F4:70:03:E7:43:91:73:23:5E",
)

AUDIO_VIDEO_OFFER = crlf(
    """
v=0
o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com
s=
c=IN IP4 host.atlanta.example.com
t=0 0
m=audio 49170 RTP/AVP 0 8 97
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:97 iLBC/8000
m=video 51372 RTP/AVP 31 32
a=rtpmap:31 H261/90000
a=rtpmap:32 MPV/90000
"""
).replace("s=\r\n", "s=-\r\n")

OUR_ORIGIN = Origin("uc-edge", "1000", 1, "10.0.0.1")


@pytest.mark.parametrize("text", [SIPP_OFFER, BARESIP_OFFER, CHROME_OFFER, AUDIO_VIDEO_OFFER])
def test_realistic_descriptions_round_trip_byte_for_byte(text: str) -> None:
    parsed = SessionDescription.parse(text)
    assert str(parsed) == text
    assert bytes(parsed) == text.encode()
    assert SessionDescription.parse(bytes(parsed)) == parsed


def test_lf_only_input_is_accepted_and_written_back_with_crlf() -> None:
    parsed = SessionDescription.parse(SIPP_OFFER.replace("\r\n", "\n"))
    assert str(parsed) == SIPP_OFFER


def test_parsed_fields_of_baresip_offer() -> None:
    sdp = SessionDescription.parse(BARESIP_OFFER)
    assert sdp.origin == Origin("-", "1993355436", 2126768183, "192.168.1.10")
    assert sdp.connection == Connection("192.168.1.10")
    (audio,) = sdp.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio",
        10490,
        "RTP/AVP",
        ["96", "0", "8", "101"],
    )
    assert audio.bandwidths[0].bwtype == "AS" and audio.bandwidths[0].kbps == 64
    assert audio.codecs() == [
        Codec("opus", 48000, 2, 96, "stereo=1;sprop-stereo=1"),
        Codec("PCMU", 8000, 1, 0),
        Codec("PCMA", 8000, 1, 8),
        Codec("telephone-event", 8000, 1, 101, "0-15"),
    ]
    assert audio.ptime == 20.0
    assert audio.rtcp == RtcpAttribute(10491)
    assert not audio.rtcp_mux
    assert sdp.direction_of(audio) is Direction.SENDRECV
    assert audio.get_values("ssrc") == ["1528352125 cname:a1b2c3d4"]


def test_chrome_offer_keeps_webrtc_attributes_and_is_not_mistaken_for_hold() -> None:
    sdp = SessionDescription.parse(CHROME_OFFER)
    (audio,) = sdp.media
    assert audio.get_values("ice-ufrag") == ["Oyef"]
    assert audio.get_values("setup") == ["actpass"]
    assert audio.mid == "0"
    assert audio.rtcp_mux
    assert audio.rtcp == RtcpAttribute(9, Connection("0.0.0.0"))
    assert sdp.get_values("group") == ["BUNDLE 0"]
    assert audio.get_values("fingerprint")[0].startswith("sha-256 49:66")
    # c=0.0.0.0 with ICE means "no default candidate yet", not RFC 2543 hold.
    assert not sdp.is_on_hold(audio)


def test_static_payload_types_without_rtpmap_are_known() -> None:
    sdp = SessionDescription.parse(
        crlf("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\nm=audio 4000 RTP/AVP 8 0 18 99")
    )
    assert [c.name for c in sdp.media[0].codecs()] == ["PCMA", "PCMU", "G729"]


GARBAGE_CASES = [
    ("", "empty"),
    ("v=1\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\n", "v=0"),
    ("v=0\r\ns=-\r\nt=0 0\r\n", "o= and s="),
    ("v=0\r\no=- 1 1 IN IP4\r\ns=-\r\nt=0 0\r\n", "expected 6 fields"),
    ("v=0\r\no=- x 1 IN IP4 a\r\ns=-\r\nt=0 0\r\n", "session id 'x'"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\n", "no t= line"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\nm=audio 70000 RTP/AVP 0\r\nc=IN IP4 a\r\n", "out of range"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 200\r\nc=IN IP4 a\r\n", "0..127"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP\r\nc=IN IP4 a\r\n", "expected <media>"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", "no c= line"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 a\r\nt=0 0\r\na=rtpmap:96 opus\r\n", "name>/<clock"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 a\r\nt=0 0\r\na=rtpmap:300 x/8000\r\n", "0..127"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 a\r\nt=0 0\r\na=ptime:abc\r\n", "ptime must be"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 a\r\nt=0 0\r\na=fmtp:96\r\n", "<format> <parameters>"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 a\r\nt=0 0\r\na=sendrecv:yes\r\n", "takes no value"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 a\r\nt=0 0\r\na=rtcp:x\r\n", "port 'x'"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 a b\r\nt=0 0\r\n", "expected 3 fields"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nx=1\r\nt=0 0\r\n", "not allowed at session level"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\n\r\nm=audio 0 RTP/AVP 0\r\n", "empty"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nhello\r\n", "not <type>=<value>"),
    (b"v=0\r\no=- 1 1 IN IP4 \xff\r\ns=-\r\nt=0 0\r\n", "UTF-8"),
    ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 a\r\nc=IN IP4 b\r\nt=0 0\r\n", "more than one"),
]


@pytest.mark.parametrize(("text", "message"), GARBAGE_CASES)
def test_garbage_raises_a_precise_value_error(text: str | bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionDescription.parse(text)


def test_oversized_sdp_is_refused_before_parsing() -> None:
    with pytest.raises(ValueError, match="longer than"):
        SessionDescription.parse(SIPP_OFFER + "a=x\r\n" * 20000)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_random_input_only_ever_raises_value_error(data: str | bytes) -> None:
    try:
        SessionDescription.parse(data)
    except ValueError:
        pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_real_descriptions_only_ever_raise_value_error(data: st.DataObject) -> None:
    lines = data.draw(st.sampled_from([BARESIP_OFFER, CHROME_OFFER, AUDIO_VIDEO_OFFER])).split("\r\n")
    index = data.draw(st.integers(0, len(lines) - 1))
    prefix = lines[index][:2]
    lines[index] = prefix + data.draw(
        st.text(alphabet=st.sampled_from(" :/0123456789abc=-.\r\x00é"), max_size=40)
    )
    text = "\r\n".join(lines)
    try:
        parsed = SessionDescription.parse(text)
    except ValueError:
        return
    # Anything that parses must also negotiate or be refused with a ValueError (488/400).
    try:
        negotiate(parsed)
    except ValueError:
        pass
    assert SessionDescription.parse(str(parsed)) == parsed


# ---- offer/answer -----------------------------------------------------------------------------


def test_answer_to_baresip_keeps_offer_order_and_payload_numbers() -> None:
    offer = SessionDescription.parse(BARESIP_OFFER)
    answer = create_answer(offer, origin=OUR_ORIGIN, address="10.0.0.1", port=20000)
    (audio,) = answer.media
    assert audio.port == 20000
    assert audio.formats == ["96", "0", "8", "101"]
    assert [c.payload_type for c in audio.codecs()] == [96, 0, 8, 101]
    assert answer.direction_of(audio) is Direction.SENDRECV
    assert answer.connection == Connection("10.0.0.1")
    # The answer is a valid SDP that survives its own round trip.
    assert SessionDescription.parse(str(answer)) == answer


def test_answer_to_chrome_picks_supported_codecs_and_mirrors_mid_and_rtcp_mux() -> None:
    offer = SessionDescription.parse(CHROME_OFFER)
    answer = create_answer(offer, origin=OUR_ORIGIN, address="10.0.0.1", port=20000)
    (audio,) = answer.media
    assert audio.proto == "UDP/TLS/RTP/SAVPF"
    assert audio.formats == ["111", "0", "8", "126"]  # red, G722, CN and telephone-event/48000 dropped
    assert audio.mid == "0"
    assert audio.rtcp_mux


def test_answer_to_sipp_is_pcmu_only() -> None:
    answer = create_answer(
        SessionDescription.parse(SIPP_OFFER), origin=OUR_ORIGIN, address="10.0.0.1", port=1
    )
    assert answer.media[0].codecs() == [Codec("PCMU", 8000, 1, 0)]


def test_unsupported_streams_are_rejected_with_port_zero() -> None:
    offer = SessionDescription.parse(AUDIO_VIDEO_OFFER)
    answer = create_answer(offer, origin=OUR_ORIGIN, address="10.0.0.1", port=30000)
    audio, video = answer.media
    assert audio.port == 30000 and audio.formats == ["0", "8"]
    assert video.port == 0 and video.media == "video" and video.formats == ["31", "32"]
    assert str(answer).count("m=") == 2


def test_offer_with_no_common_codec_raises_for_488() -> None:
    offer = SessionDescription.parse(
        SIPP_OFFER.replace("0\r\na=rtpmap:0 PCMU/8000", "18\r\na=rtpmap:18 G729/8000")
    )
    with pytest.raises(NoCommonCodecError, match="no common codec"):
        create_answer(offer, origin=OUR_ORIGIN, address="10.0.0.1", port=1)


def test_telephone_event_alone_is_not_a_common_codec() -> None:
    offer = SessionDescription.parse(
        crlf(
            "v=0\no=- 1 1 IN IP4 a\ns=-\nc=IN IP4 a\nt=0 0\nm=audio 4000 RTP/AVP 18 101\n"
            "a=rtpmap:101 telephone-event/8000"
        )
    )
    with pytest.raises(NoCommonCodecError):
        negotiate(offer)


def test_all_streams_rejected_by_offerer_is_no_acceptable_stream() -> None:
    offer = SessionDescription.parse(SIPP_OFFER.replace("m=audio 6000", "m=audio 0"))
    with pytest.raises(NoCommonCodecError):
        negotiate(offer)


@pytest.mark.parametrize(
    ("offered", "local", "expected"),
    [
        ("sendrecv", Direction.SENDRECV, Direction.SENDRECV),
        ("sendonly", Direction.SENDRECV, Direction.RECVONLY),
        ("recvonly", Direction.SENDRECV, Direction.SENDONLY),
        ("inactive", Direction.SENDRECV, Direction.INACTIVE),
        ("sendrecv", Direction.SENDONLY, Direction.SENDONLY),
        ("sendonly", Direction.SENDONLY, Direction.INACTIVE),
        ("recvonly", Direction.INACTIVE, Direction.INACTIVE),
    ],
)
def test_direction_answered_per_rfc3264_6_1(offered: str, local: Direction, expected: Direction) -> None:
    offer = SessionDescription.parse(SIPP_OFFER + f"a={offered}\r\n")
    answer = create_answer(offer, origin=OUR_ORIGIN, address="10.0.0.1", port=1, local_direction=local)
    assert answer.media[0].explicit_direction is expected


def test_session_level_direction_applies_to_media() -> None:
    offer = SessionDescription.parse(SIPP_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n"))
    assert offer.direction_of(offer.media[0]) is Direction.SENDONLY
    answer = create_answer(offer, origin=OUR_ORIGIN, address="10.0.0.1", port=1)
    assert answer.media[0].explicit_direction is Direction.RECVONLY


def test_old_style_hold_with_zero_address_is_recognised() -> None:
    offer = SessionDescription.parse(SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"))
    assert offer.is_on_hold(offer.media[0])
    answer = create_answer(offer, origin=OUR_ORIGIN, address="10.0.0.1", port=1)
    # We must not send to 0.0.0.0; we still receive what the holder sends.
    assert answer.media[0].explicit_direction is Direction.RECVONLY


def test_hold_via_inactive_and_resume() -> None:
    offer = SessionDescription.parse(BARESIP_OFFER.replace("a=sendrecv", "a=inactive"))
    assert offer.is_on_hold(offer.media[0])
    answer = create_answer(offer, origin=OUR_ORIGIN, address="10.0.0.1", port=1)
    assert answer.media[0].explicit_direction is Direction.INACTIVE
    offer.media[0].set_direction(Direction.SENDRECV)
    assert offer.media[0].get_attribute("sendrecv") is not None
    assert not offer.media[0].has_attribute("inactive")
    assert not offer.is_on_hold(offer.media[0])


def test_create_offer_assigns_dynamic_payload_types_and_parses_back() -> None:
    offer = create_offer(OUR_ORIGIN, "10.0.0.1", [OfferStream(port=40000)])
    text = str(offer)
    assert "m=audio 40000 RTP/AVP 96 0 8 97\r\n" in text
    assert "a=rtpmap:96 opus/48000/2\r\n" in text
    assert "a=rtpmap:97 telephone-event/8000\r\n" in text
    assert "a=fmtp:97 0-16\r\n" in text
    assert SessionDescription.parse(text) == offer
    # Offer to ourselves: the answer keeps our numbering.
    answer = create_answer(offer, origin=OUR_ORIGIN, address="10.0.0.2", port=40002)
    assert answer.media[0].formats == ["96", "0", "8", "97"]


def test_create_offer_avoids_taken_dynamic_numbers() -> None:
    codecs = [Codec("opus", 48000, 2), Codec("telephone-event", 8000, 1, 96)]
    offer = create_offer(OUR_ORIGIN, "::1", [OfferStream(port=1, codecs=codecs)])
    assert offer.media[0].formats == ["97", "96"]
    assert offer.connection == Connection("::1", addrtype="IP6")


def test_origin_version_increments_only_when_reoffer_changes() -> None:
    tracker = OriginTracker(Origin("uc-edge", "42", 7, "10.0.0.1"))
    first = tracker.stamp(create_offer(tracker.origin, "10.0.0.1", [OfferStream(port=1000)]))
    assert first.origin.session_version == 7
    same = tracker.stamp(create_offer(tracker.origin, "10.0.0.1", [OfferStream(port=1000)]))
    assert same.origin.session_version == 7
    hold = create_offer(tracker.origin, "10.0.0.1", [OfferStream(port=1000, direction=Direction.SENDONLY)])
    assert tracker.stamp(hold).origin.session_version == 8
    assert tracker.origin.session_id == "42"
    assert Origin.parse("- 1 5 IN IP4 h").next_version().session_version == 6


def test_rtpmap_and_attribute_helpers() -> None:
    assert RtpMap.parse("111 opus/48000/2") == RtpMap(111, "opus", 48000, 2)
    assert str(RtpMap(0, "PCMU", 8000)) == "0 PCMU/8000"
    assert str(Attribute("rtcp-mux")) == "rtcp-mux"
    assert Direction.SENDONLY.reversed() is Direction.RECVONLY
    assert DEFAULT_CODECS[0].name == "opus"


_FULL_SESSION = crlf(
    """
v=0
o=alice 2890844526 2890844527 IN IP4 192.0.2.1
s=call
i=info
u=http://example.com/x
e=a@example.com
p=+1 555 0100
c=IN IP4 192.0.2.1
b=AS:128
t=0 0
r=7d 1h 0 25h
z=2882844526 -1h
k=prompt
a=group:BUNDLE 0
m=audio 49170/2 RTP/AVP 0 101
i=voice
c=IN IP4 192.0.2.2
b=TIAS:64000
k=clear:x
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=rtcp-mux
m=video 0 RTP/AVP 96
"""
)


@pytest.mark.parametrize("text", [SIPP_OFFER, BARESIP_OFFER, CHROME_OFFER, AUDIO_VIDEO_OFFER, _FULL_SESSION])
def test_copy_equals_a_render_parse_round_trip(text: str) -> None:
    sdp = SessionDescription.parse(text)
    copy = sdp.copy()
    assert copy == SessionDescription.parse(str(sdp))
    assert str(copy) == str(sdp)


def test_copy_shares_no_mutable_part() -> None:
    sdp = SessionDescription.parse(_FULL_SESSION)
    copy = sdp.copy()
    copy.origin.session_version += 1
    assert copy.connection is not None
    copy.connection.address = "198.51.100.1"
    copy.timings[0].repeats.append("x")
    copy.attributes[0] = Attribute(copy.attributes[0].name, "BUNDLE 1")  # attributes are immutable:
    with pytest.raises(AttributeError):  # a copy shares them, so none can be changed in place
        copy.attributes[0].value = "x"  # type: ignore[misc]
    copy.bandwidths[0].kbps = 1
    copy.emails.append("b@example.com")
    copy.phones.clear()
    media = copy.media[0]
    media.formats.append("8")
    media.attributes.pop()
    media.bandwidths[0].kbps = 1
    assert media.connection is not None
    media.connection.address = "198.51.100.2"
    copy.media.pop()
    assert sdp == SessionDescription.parse(_FULL_SESSION)
