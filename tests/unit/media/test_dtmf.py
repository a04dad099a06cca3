"""RFC 4733 telephone-event sender/receiver and SIP INFO DTMF bodies (media/dtmf.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.dtmf import (
    DigitEvent,
    DtmfPacket,
    DtmfReceiver,
    DtmfSender,
    TelephoneEvent,
    digit_packets,
    digit_to_event,
    event_to_digit,
    parse_dtmf_info,
    parse_dtmf_relay,
)
from media.rtp import RtpPacket

DATA = Path(__file__).parents[2] / "data" / "rtp"


def test_telephone_event_vector() -> None:
    packet = RtpPacket.parse((DATA / "telephone_event_end.bin").read_bytes())
    event = TelephoneEvent.parse(packet.payload)
    assert event == TelephoneEvent(5, end=True, volume=10, duration=800)
    assert bytes(event) == packet.payload


@given(st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 0xFFFF))
def test_telephone_event_round_trip(event: int, end: bool, volume: int, duration: int) -> None:
    payload = TelephoneEvent(event, end, volume, duration)
    assert TelephoneEvent.parse(bytes(payload)) == payload


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "telephone-event payload is too short"),
        (b"\x01\x02\x03", "telephone-event payload is too short"),
        (b"\x01\x02\x03\x04\x05", "telephone-event payload length is invalid"),
    ],
)
def test_telephone_event_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        TelephoneEvent.parse(data)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (TelephoneEvent(256), "telephone-event code must be in 0..255"),
        (TelephoneEvent(1, volume=64), "telephone-event volume must be in 0..63"),
        (TelephoneEvent(1, duration=0x10000), "telephone-event duration must be in 0..65535"),
    ],
)
def test_telephone_event_serialise_errors(event: TelephoneEvent, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        bytes(event)


def test_digit_codes() -> None:
    assert [digit_to_event(d) for d in "0123456789*#ABCD"] == list(range(16))
    assert digit_to_event("a") == 12 and digit_to_event("flash") == 16
    assert event_to_digit(11) == "#" and event_to_digit(16) == "flash" and event_to_digit(40) is None
    with pytest.raises(ValueError, match=r"^DTMF digit is invalid: 'x'$"):
        digit_to_event("x")


def test_digit_packet_schedule() -> None:
    packets = digit_packets("5", start_time=10.0, timestamp=1000, duration=0.2, clock_rate=8000)
    times = [t for t, _ in packets]
    assert times == pytest.approx([10.0, 10.05, 10.1, 10.15, 10.2, 10.25])
    assert [p.marker for _, p in packets] == [True] + [False] * 5
    assert {p.timestamp for _, p in packets} == {1000}
    assert [p.event.duration for _, p in packets] == [400, 800, 1200, 1600, 1600, 1600]
    assert [p.event.end for _, p in packets] == [False, False, False, True, True, True]
    assert packets[0][1].payload == bytes(TelephoneEvent(5, False, 10, 400))
    short = digit_packets("1", start_time=0.0, timestamp=0, duration=0.04)
    assert [(p.marker, p.event.end) for _, p in short] == [(True, True), (False, True), (False, True)]
    with pytest.raises(ValueError, match=r"^DTMF duration does not fit one telephone-event segment$"):
        digit_packets("1", start_time=0.0, timestamp=0, duration=9.0)


def test_sender_releases_packets_as_time_passes() -> None:
    sender = DtmfSender(8000)
    sender.send("12", now=1.0, timestamp=8000)
    assert sender.get_timer() == 1.0
    first = sender.poll(1.0)
    assert [(p.marker, p.event.event, p.timestamp) for p in first] == [(True, 1, 8000)]
    assert sender.poll(1.04) == []
    packets: list[DtmfPacket] = first
    now = 1.0
    while sender.busy:
        timer = sender.get_timer()
        assert timer is not None and timer >= now
        now = timer
        packets += sender.poll(now)
    second = [p for p in packets if p.event.event == 2]
    # Digit 2 starts one interval after digit 1's last end packet (1.0 + 3 * 0.05), 1.2 s -> ts +1600.
    assert second[0].marker and second[0].timestamp == 8000 + 1600
    assert len(packets) == 8
    with pytest.raises(ValueError, match=r"^DTMF digit is invalid"):
        sender.send("1z", now=5.0, timestamp=0)
    assert not sender.busy  # nothing half-queued


def to_receiver(receiver: DtmfReceiver, packets: list[tuple[float, DtmfPacket]]) -> list[DigitEvent]:
    events: list[DigitEvent] = []
    for now, packet in packets:
        events += receiver.handle_timer(now)
        events += receiver.receive(packet.payload, packet.timestamp, now)
    return events


def test_sender_to_receiver_round_trip_with_lost_start_packet() -> None:
    sender = DtmfSender(8000)
    sender.send("1#9", now=0.0, timestamp=0, duration=0.12)
    schedule: list[tuple[float, DtmfPacket]] = []
    while sender.busy:
        timer = sender.get_timer()
        assert timer is not None
        schedule += [(timer, packet) for packet in sender.poll(timer)]
    starts = [index for index, (_, packet) in enumerate(schedule) if packet.marker]
    assert len(starts) == 3
    lossy = [item for index, item in enumerate(schedule) if index != starts[1]]  # "#" loses its start
    receiver = DtmfReceiver(8000)
    events = to_receiver(receiver, lossy)
    assert [(e.digit, e.duration, e.source) for e in events] == [
        ("1", 0.12, "rfc4733"),
        ("#", 0.12, "rfc4733"),
        ("9", 0.12, "rfc4733"),
    ]
    assert receiver.handle_timer(100.0) == []


def test_retransmitted_and_reordered_end_packets_report_once() -> None:
    packets = digit_packets("7", start_time=0.0, timestamp=500, duration=0.1)
    receiver = DtmfReceiver(8000)
    events = to_receiver(receiver, packets + packets[-2:] + packets[:1])
    assert [e.digit for e in events] == ["7"]


def test_all_end_packets_lost_reports_on_next_digit_or_timeout() -> None:
    first = [
        item
        for item in digit_packets("3", start_time=0.0, timestamp=0, duration=0.2)
        if not item[1].event.end
    ]
    second = digit_packets("4", start_time=1.0, timestamp=8000, duration=0.1)
    receiver = DtmfReceiver(8000)
    events = to_receiver(receiver, first + second[:1])
    assert [(e.digit, e.duration) for e in events] == [("3", 0.15)]
    assert receiver.get_timer() == pytest.approx(1.5)
    assert receiver.handle_timer(1.4) == []
    assert [(e.digit, e.duration) for e in receiver.handle_timer(1.5)] == [("4", 0.05)]
    # Its end packets arriving afterwards do not report it again.
    assert to_receiver(receiver, second[1:]) == []


def test_receiver_ignores_non_dtmf_events_and_rejects_garbage() -> None:
    receiver = DtmfReceiver(8000)
    assert receiver.receive(bytes(TelephoneEvent(40, True, 10, 800)), 0, 0.0) == []
    with pytest.raises(ValueError, match=r"^telephone-event payload is too short$"):
        receiver.receive(b"\x01", 0, 0.0)


@given(st.lists(st.tuples(st.binary(min_size=4, max_size=4), st.integers(0, 3)), max_size=50))
@settings(max_examples=200, deadline=None)
def test_receiver_reports_each_event_timestamp_at_most_once(packets: list[tuple[bytes, int]]) -> None:
    receiver = DtmfReceiver(8000, remembered=16)
    events: list[DigitEvent] = []
    for index, (payload, timestamp) in enumerate(packets):
        events += receiver.receive(payload, timestamp, index * 0.01)
    events += receiver.handle_timer(1000.0)
    timestamps = [e.timestamp for e in events]
    # Only four distinct timestamps, all remembered: each is reported at most once.
    assert len(timestamps) == len(set(timestamps))


@pytest.mark.parametrize(
    ("body", "digit", "duration"),
    [
        ("Signal=5\r\nDuration=160\r\n", "5", 0.16),
        (b"Signal=#\nDuration=250", "#", 0.25),
        ("signal = a\r\n", "A", None),
        ("Signal=11\r\nDuration=100", "#", 0.1),
        ("Signal=10", "*", None),
        ("Signal=16", "flash", None),
    ],
)
def test_dtmf_relay_bodies(body: str | bytes, digit: str, duration: float | None) -> None:
    assert parse_dtmf_relay(body) == DigitEvent(digit, duration, "sip-info")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("Duration=160", "dtmf-relay body has no Signal"),
        ("", "dtmf-relay body has no Signal"),
        ("Signal=55", "dtmf-relay signal is invalid: '55'"),
        ("Signal=x", "dtmf-relay signal is invalid: 'x'"),
        ("Signal=5\r\nDuration=abc", "dtmf-relay duration is invalid"),
        ("Signal=5\r\nDuration=-4", "dtmf-relay duration is invalid"),
        ("Signal 5", "dtmf-relay line is invalid: 'Signal 5'"),
        ("Signal=5\r\n" + "X=1\r\n" * 300, "dtmf-relay body is too long"),
    ],
)
def test_dtmf_relay_errors(body: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        parse_dtmf_relay(body)


def test_parse_dtmf_info_by_content_type() -> None:
    assert parse_dtmf_info("application/dtmf-relay; charset=utf-8", "Signal=9") == DigitEvent(
        "9", None, "sip-info"
    )
    assert parse_dtmf_info("Application/DTMF", b"*") == DigitEvent("*", None, "sip-info")
    with pytest.raises(ValueError, match=r"^SIP INFO content type is not DTMF: 'text/plain'$"):
        parse_dtmf_info("text/plain", "5")


@given(st.text(max_size=200) | st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_dtmf_relay_only_raises_value_error(body: str | bytes) -> None:
    try:
        event = parse_dtmf_relay(body)
    except ValueError:
        return
    assert event.source == "sip-info"
