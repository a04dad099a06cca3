"""Call features end to end with real baresip phones through ``uc-edge serve``: CANCEL while ringing,
RFC 4733 DTMF from one phone to the other, blind transfer (REFER) and hold/resume — each checked on the
phones (events, received audio, SIP trace) and in uc_calls / uc_cdr / Kafka."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from tests.e2e import audio
from tests.e2e.conftest import Server, SipUsers
from tests.e2e.test_calls_audio import (
    LEVEL_FLOOR,
    PASSWORD,
    Phone,
    call_events,
    call_rows,
    check_answered_call,
    phones,
    start_phone,
    tone_file,
)

pytestmark = pytest.mark.e2e

SERVER_ENV = {"UC_EDGE_RTP_PORT_MIN": "32000", "UC_EDGE_RTP_PORT_MAX": "32999"}


def tones(tmp_path: Path) -> dict[int, Path]:
    directory = tmp_path / "tones"
    directory.mkdir(exist_ok=True)
    return {f: tone_file(directory / f"{f}.wav", f) for f in (600, 800, 1000)}


async def test_cancel_while_ringing_ends_the_call_as_cancelled(
    server: Server, sip_users: SipUsers, tmp_path: Path
) -> None:
    caller, callee = await sip_users.create(2, PASSWORD, label="cancel")
    sources = tones(tmp_path)
    a = start_phone(tmp_path / "a", user=caller, server=server, source=sources[1000], codecs="PCMU")
    b = start_phone(tmp_path / "b", user=callee, server=server, source=sources[600], codecs="PCMU")
    with phones(a, b):

        def ring_then_hang_up() -> None:
            a.command("dial", f"sip:{callee}@127.0.0.1")
            b.wait_event("CALL_INCOMING", 15)
            a.wait_event("CALL_RINGING", 5)
            time.sleep(0.5)
            a.command("hangup")  # before B answers: CANCEL
            a.wait_event("CALL_CLOSED", 10)
            b.wait_event("CALL_CLOSED", 10)

        await asyncio.to_thread(ring_then_hang_up)
        assert "CALL_ESTABLISHED" not in a.event_types() + b.event_types()

    records = await call_rows(caller, callee)
    session = records.session
    assert session["answered_at"] is None, dict(session)
    assert session["termination_cause"] == "cancelled", dict(session)
    assert session["status"] in ("ended", "failed") and session["ended_by"] == "caller", dict(session)
    assert records.routing and records.routing[-1]["result"] == "cancelled", [
        dict(r) for r in records.routing
    ]
    assert all(leg["status"] in ("terminated", "failed") for leg in records.legs), [
        dict(x) for x in records.legs
    ]
    assert records.cdr is not None and records.cdr["termination_cause"] == "cancelled"
    assert records.cdr["billable_seconds"] == 0
    events = await call_events(session, ("call.started", "call.ended", "cdr.created"))
    assert "call.answered" not in {e["type"] for e in events}


def dtmf_digits(phone: Phone) -> str:
    return "".join(str(e.get("param", "")) for e in phone.events if e.get("type") == "CALL_DTMF_START")


@pytest.mark.parametrize("caller_codecs", ["PCMU", "opus/48000/2"], ids=["relay", "transcoded"])
async def test_dtmf_digits_reach_the_other_phone(
    server: Server, sip_users: SipUsers, tmp_path: Path, caller_codecs: str
) -> None:
    """A sends RFC 4733 digits; B (PCMU) reports each one — relayed as they are when both legs speak PCMU,
    carried across when A's leg is Opus and B's PCMU."""
    caller, callee = await sip_users.create(2, PASSWORD, label="dtmf")
    sources = tones(tmp_path)
    a = start_phone(tmp_path / "a", user=caller, server=server, source=sources[1000], codecs=caller_codecs)
    b = start_phone(
        tmp_path / "b", user=callee, server=server, source=sources[600], codecs="PCMU", answermode="auto"
    )
    digits = "159#"
    with phones(a, b):

        def call_and_press() -> None:
            a.command("dial", f"sip:{callee}@127.0.0.1")
            a.wait_event("CALL_ESTABLISHED", 15)
            b.wait_event("CALL_ESTABLISHED", 5)
            time.sleep(1.0)
            for digit in digits:
                a.command("sndcode", digit)
                time.sleep(0.3)
                a.command("sndcode", "\x00")  # key release: ends the event
                time.sleep(0.3)
            deadline = time.monotonic() + 5
            while len(dtmf_digits(b)) < len(digits) and time.monotonic() < deadline:
                time.sleep(0.1)
            a.command("hangup")
            a.wait_event("CALL_CLOSED", 10)

        await asyncio.to_thread(call_and_press)
        received = dtmf_digits(b)
    print(f"DTMF {caller_codecs}→PCMU: sent {digits!r}, B received {received!r}")
    assert received == digits, b.log_tail()
    await check_answered_call(caller, callee)


def heard_after(phone: Phone, seconds_from_end: float) -> tuple[float, float]:
    """Dominant frequency and RMS of the last ``seconds_from_end`` s of what ``phone`` heard."""
    samples, rate = phone.received_audio()
    active = audio.active_span(samples, rate, LEVEL_FLOOR)
    tail = active[-int(seconds_from_end * rate) :]
    assert tail.size >= rate, f"{phone.user} received {active.size / rate:.2f}s of audio: {phone.log_tail()}"
    return audio.dominant_frequency(tail, rate), audio.rms(tail)


async def test_blind_transfer_connects_the_caller_to_the_target(
    server: Server, sip_users: SipUsers, tmp_path: Path
) -> None:
    """A (1000 Hz) calls B (600 Hz); B transfers A to C (800 Hz) with REFER: B drops out, A and C hear
    each other."""
    caller, transferor, target = await sip_users.create(3, PASSWORD, label="xfer")
    sources = tones(tmp_path)
    a = start_phone(tmp_path / "a", user=caller, server=server, source=sources[1000], codecs="PCMU")
    b = start_phone(
        tmp_path / "b", user=transferor, server=server, source=sources[600], codecs="PCMU", answermode="auto"
    )
    c = start_phone(
        tmp_path / "c", user=target, server=server, source=sources[800], codecs="PCMU", answermode="auto"
    )
    with phones(a, b, c):

        def call_and_transfer() -> None:
            a.command("dial", f"sip:{transferor}@127.0.0.1")
            a.wait_event("CALL_ESTABLISHED", 15)
            b.wait_event("CALL_ESTABLISHED", 5)
            time.sleep(2.0)
            b.command("transfer", f"sip:{target}@127.0.0.1")
            c.wait_event("CALL_ESTABLISHED", 15)
            b.wait_event("CALL_CLOSED", 10)
            time.sleep(4.0)
            assert "CALL_CLOSED" not in a.event_types(), "the transferred party lost its call"
            a.command("hangup")
            a.wait_event("CALL_CLOSED", 10)
            c.wait_event("CALL_CLOSED", 10)

        await asyncio.to_thread(call_and_transfer)
    a_freq, a_level = heard_after(a, 2.0)
    c_freq, c_level = heard_after(c, 2.0)
    print(
        f"transfer: A finally heard {a_freq:.0f} Hz (RMS {a_level:.0f}), "
        f"C heard {c_freq:.0f} Hz (RMS {c_level:.0f})"
    )
    assert abs(a_freq - 800) <= 15 and a_level > LEVEL_FLOOR * 4
    assert abs(c_freq - 1000) <= 15 and c_level > LEVEL_FLOOR * 4

    records = await call_rows(caller, transferor)
    session = records.session
    assert session["status"] == "ended" and session["termination_cause"] == "normal_clearing", dict(session)
    targets = [r["target"] for r in records.routing]
    assert any(target in t for t in targets), targets
    assert records.routing[-1]["result"] == "answered", [dict(r) for r in records.routing]
    assert len(records.legs) == 3, [dict(x) for x in records.legs]
    assert records.cdr is not None
    await call_events(session, ("call.started", "call.answered", "call.ended", "cdr.created"))


def sdp_directions(phone: Phone) -> list[str]:
    """The direction attribute of every SDP the phone sent or received, in order (its SIP trace)."""
    return re.findall(
        r"^a=(sendrecv|sendonly|recvonly|inactive)\s*$", phone.log.read_text(errors="replace"), re.M
    )


def rtp_totals(phone: Phone) -> tuple[int, int]:
    """(sent, received) RTP packets of the phone's last call, from the summary baresip logs at its end."""
    found = re.findall(r"^packets:\s+(\d+)\s+(\d+)\s*$", phone.log.read_text(errors="replace"), re.M)
    assert found, f"no RTP summary in {phone.user}'s log: {phone.log_tail()}"
    sent, received = found[-1]
    return int(sent), int(received)


async def test_hold_and_resume_pass_direction_across_and_audio_comes_back(
    server: Server, sip_users: SipUsers, tmp_path: Path
) -> None:
    """A puts B on hold (re-INVITE a=sendonly) and resumes: B is offered sendonly and answers recvonly, A
    gets recvonly back; on resume both go back to sendrecv and RTP flows again both ways.

    baresip 1.0 stops writing its sndfile decode dump at the first re-INVITE (the same happens in a direct
    baresip-to-baresip call), so audio after the resume is proven by RTP counts: both phones stop sending
    while on hold, so each must have received far more than the pre-hold packets."""
    caller, callee = await sip_users.create(2, PASSWORD, label="hold")
    sources = tones(tmp_path)
    a = start_phone(
        tmp_path / "a", user=caller, server=server, source=sources[1000], codecs="PCMU", sip_trace=True
    )
    b = start_phone(
        tmp_path / "b",
        user=callee,
        server=server,
        source=sources[600],
        codecs="PCMU",
        answermode="auto",
        sip_trace=True,
    )
    before_hold, on_hold, after_resume = 2.0, 3.0, 4.0
    with phones(a, b):

        def hold_and_resume() -> None:
            a.command("dial", f"sip:{callee}@127.0.0.1")
            a.wait_event("CALL_ESTABLISHED", 15)
            b.wait_event("CALL_ESTABLISHED", 5)
            time.sleep(before_hold)
            assert a.command("hold")["ok"]
            time.sleep(on_hold)
            assert a.command("resume")["ok"]
            time.sleep(after_resume)
            a.command("hangup")
            a.wait_event("CALL_CLOSED", 10)
            b.wait_event("CALL_CLOSED", 10)

        await asyncio.to_thread(hold_and_resume)
        # SDP offers/answers: the call (A's first offer is sent twice, before and after the 407), then the
        # hold and the resume, as A sent and got them and as B got and answered them
        for phone in (a, b):
            directions = sdp_directions(phone)
            assert set(directions[:-4]) == {"sendrecv"}, (phone.user, directions)
            assert directions[-4:] == ["sendonly", "recvonly", "sendrecv", "sendrecv"], (
                phone.user,
                directions,
            )
        (a_sent, a_received), (b_sent, b_received) = rtp_totals(a), rtp_totals(b)
    print(f"hold/resume: A sent {a_sent} received {a_received}; B sent {b_sent} received {b_received}")
    packets_per_second = 50  # 20 ms PCMU
    floor = int((before_hold + after_resume * 0.75) * packets_per_second)
    assert a_received >= floor and b_received >= floor, (a_received, b_received, floor)
    assert a_received >= b_sent * 0.95 and b_received >= a_sent * 0.95
    await check_answered_call(caller, callee)
