"""Symmetric RTP latching (media/latching.py)."""

from __future__ import annotations

import pytest

from media.latching import Latch, RelatchPolicy
from media.rtp import RtpHeader, RtpPacket, parse_header

PHONE = ("203.0.113.5", 40000)
REBOUND = ("203.0.113.5", 40002)
ATTACKER = ("198.51.100.66", 5004)


def header(ssrc: int = 0x1111, payload_type: int = 0) -> RtpHeader:
    return RtpHeader(False, payload_type, 1, 160, ssrc)


def test_latches_on_first_valid_packet_and_rejects_others() -> None:
    latch = Latch([0, 101])
    assert not latch.latched
    assert latch.accept(PHONE, header(), 0.0)
    assert latch.address == PHONE and latch.ssrc == 0x1111
    assert not latch.accept(ATTACKER, header(), 0.01)
    assert not latch.accept(ATTACKER, header(ssrc=0x9999), 0.02)
    assert latch.accept(PHONE, header(payload_type=101), 0.03)
    assert (latch.accepted, latch.rejected_foreign, latch.rejected_invalid) == (2, 2, 0)


def test_invalid_packets_never_latch() -> None:
    latch = Latch([8], expected_ssrc=0x2222)
    assert not latch.accept(ATTACKER, header(ssrc=0x2222, payload_type=0), 0.0)  # not negotiated
    assert not latch.accept(ATTACKER, header(ssrc=0x3333, payload_type=8), 0.0)  # not the signalled SSRC
    assert not latch.latched and latch.rejected_invalid == 2
    assert latch.accept(PHONE, header(ssrc=0x2222, payload_type=8), 0.0)
    assert latch.address == PHONE
    # From the latched address, packets that fail validation are still refused.
    assert not latch.accept(PHONE, header(ssrc=0x2222, payload_type=0), 0.1)


def test_learning_needs_n_consecutive_valid_packets_from_one_address() -> None:
    latch = Latch([0], learn_count=3)
    assert latch.accept(PHONE, header(), 0.0)
    assert latch.accept(ATTACKER, header(ssrc=5), 0.01)  # accepted while learning, resets the count
    assert latch.accept(PHONE, header(), 0.02)
    assert latch.accept(PHONE, header(), 0.04)
    assert not latch.latched
    assert latch.accept(PHONE, header(), 0.06)
    assert latch.address == PHONE
    assert not latch.accept(ATTACKER, header(ssrc=5), 0.08)


def test_relatch_on_new_ssrc_after_silence() -> None:
    latch = Latch([0], relatch_after=2.0, learn_count=2)
    latch.accept(PHONE, header(), 0.0)
    latch.accept(PHONE, header(), 0.02)
    # The phone restarted behind a new NAT port: new SSRC, but the old address spoke 1 s ago.
    assert not latch.accept(REBOUND, header(ssrc=0x2222), 1.0)
    assert not latch.accept(REBOUND, header(ssrc=0x2222), 1.02)
    # After 2 s of silence the newcomer needs learn_count packets before it takes over.
    assert not latch.accept(REBOUND, header(ssrc=0x2222), 2.1)
    assert latch.accept(REBOUND, header(ssrc=0x2222), 2.12)
    assert latch.address == REBOUND and latch.ssrc == 0x2222 and latch.relatches == 1
    assert not latch.accept(PHONE, header(), 2.14)


def test_default_policy_keeps_the_latch_for_the_same_ssrc_from_elsewhere() -> None:
    latch = Latch([0], relatch_after=2.0)
    latch.accept(PHONE, header(), 0.0)
    assert not latch.accept(ATTACKER, header(), 10.0)  # replaying our SSRC does not steal the stream
    assert latch.address == PHONE


def test_any_after_silence_follows_nat_rebinding_with_the_same_ssrc() -> None:
    latch = Latch([0], relatch_after=1.0, policy=RelatchPolicy.ANY_AFTER_SILENCE)
    latch.accept(PHONE, header(), 0.0)
    assert not latch.accept(REBOUND, header(), 0.5)
    assert latch.accept(REBOUND, header(), 1.5)
    assert latch.address == REBOUND


def test_strict_policy_never_relatches() -> None:
    latch = Latch([0], policy=RelatchPolicy.NEVER)
    latch.accept(PHONE, header(), 0.0)
    assert not latch.accept(REBOUND, header(ssrc=7), 100.0)
    assert not latch.accept(REBOUND, header(ssrc=7), 100.1)
    assert latch.address == PHONE and latch.relatches == 0


def test_rtcp_follows_the_latched_host() -> None:
    latch = Latch([0])
    assert latch.accept_rtcp(ATTACKER)
    latch.accept(PHONE, header(), 0.0)
    assert latch.accept_rtcp(("203.0.113.5", 40001))
    assert not latch.accept_rtcp(ATTACKER)


def test_accepts_parsed_packets_and_headers() -> None:
    data = bytes(RtpPacket(0, 1, 160, 0x1111, b"\xff" * 160))
    latch = Latch([0])
    assert latch.accept(PHONE, RtpPacket.parse(data), 0.0)
    assert latch.accept(PHONE, parse_header(data), 0.02)


def test_learn_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"^latching needs learn_count >= 1$"):
        Latch([0], learn_count=0)
