"""The bench's rtpengine NG-protocol helpers: bencode both ways and the SDP bits (no daemon, no socket)."""

from __future__ import annotations

import pytest

from bench.peers.rtpengine_ng import bdecode, bencode, media_port, pcmu_sdp


def test_bencode_matches_the_specification_examples() -> None:
    assert bencode("spam") == b"4:spam"
    assert bencode(3) == b"i3e"
    assert bencode(-3) == b"i-3e"
    assert bencode(["spam", "eggs"]) == b"l4:spam4:eggse"
    # keys sorted as raw strings
    assert bencode({"spam": "eggs", "cow": "moo"}) == b"d3:cow3:moo4:spam4:eggse"
    assert bencode({"command": "offer", "flags": ["trust-address"]}) == (
        b"d7:command5:offer5:flagsl13:trust-addressee"
    )


def test_bdecode_round_trips_and_keeps_strings_as_bytes() -> None:
    value = {"result": "ok", "sdp": "v=0\r\n", "n": 42, "list": [1, "x", {"k": b"\x00\xff"}]}
    assert bdecode(bencode(value)) == {
        "result": b"ok",
        "sdp": b"v=0\r\n",
        "n": 42,
        "list": [1, b"x", {"k": b"\x00\xff"}],
    }


@pytest.mark.parametrize("data", [b"4:spa", b"i3", b"l4:spam", b"d3:cowe", b"x", b"i1ei2e", b"di1ei2ee"])
def test_bdecode_rejects_garbage_with_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        bdecode(data)


def test_media_port_reads_the_audio_line() -> None:
    assert media_port(pcmu_sdp("127.0.0.1", 47002, 1)) == 47002
    assert media_port("v=0\r\nm=audio 50014 RTP/AVP 0\r\na=rtcp:50015\r\n") == 50014
