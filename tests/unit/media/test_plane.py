"""Media plane building blocks without sockets or a loop: latching and accounting in the endpoint,
relay continuity, the transcoding chain, DTMF regeneration, timeouts, and the recording fake."""

from __future__ import annotations

import gc
import itertools
import weakref

import numpy as np
import pytest

from media.codecs import g711
from media.control import (
    Direction,
    DtmfReceived,
    MediaError,
    MediaEvent,
    MediaTimeout,
    PayloadFormat,
    QualityReport,
    StreamParams,
)
from media.dtmf import TelephoneEvent, digit_packets
from media.endpoint import EndpointSettings, MediaCounters, RtpEndpoint
from media.fake import FakeMediaControl
from media.relay import RelayLink
from media.rtp import RtpPacket, seq_diff, ts_diff
from media.transcode import TranscodeDirection

PCMU = PayloadFormat(0, "PCMU", 8000)
OPUS = PayloadFormat(111, "opus", 48000, 2)
TE8 = PayloadFormat(101, "telephone-event", 8000)
TE8_OTHER_PT = PayloadFormat(96, "telephone-event", 8000)
PHONE_A = ("192.0.2.10", 4000)
PHONE_B = ("192.0.2.20", 5000)
INTRUDER = ("198.51.100.7", 6666)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class RecordingTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        self.sent.append((bytes(data), address))

    def close(self) -> None:
        pass

    def packets(self) -> list[RtpPacket]:
        return [RtpPacket.parse(data) for data, _ in self.sent if not 192 <= data[1] <= 223]


def make_endpoint(
    name: str,
    clock: FakeClock,
    events: list[MediaEvent],
    counters: MediaCounters | None = None,
    settings: EndpointSettings | None = None,
) -> tuple[RtpEndpoint, RecordingTransport]:
    endpoint = RtpEndpoint(
        name,
        call_id="call",
        leg_id=name,
        address="127.0.0.1",
        rtp_port=30000,
        counters=counters or MediaCounters(),
        emit=events.append,
        clock=clock,
        wallclock=lambda: 1_700_000_000.0 + clock.now,
        settings=settings or EndpointSettings(),
    )
    transport = RecordingTransport()
    endpoint.rtp_transport = transport  # type: ignore[assignment]
    endpoint.rtcp_transport = RecordingTransport()  # type: ignore[assignment]
    return endpoint, transport


def params(
    fmt: PayloadFormat,
    remote: tuple[str, int] | None,
    telephone_event: PayloadFormat | None = TE8,
    direction: Direction = Direction.SENDRECV,
) -> StreamParams:
    address, port = remote if remote else (None, None)
    return StreamParams(address, port, fmt, (fmt,), telephone_event, direction)


def rtp(
    sequence: int, timestamp: int, ssrc: int, payload: bytes, payload_type: int = 0, marker: bool = False
) -> bytes:
    return bytes(RtpPacket(payload_type, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc, payload, marker))


# --- latching and accounting --------------------------------------------------------------------------


def test_endpoint_latches_on_the_first_source_and_counts_the_rest_as_foreign() -> None:
    clock, events = FakeClock(), []
    counters = MediaCounters()
    endpoint, _ = make_endpoint("a", clock, events, counters)
    endpoint.configure(params(PCMU, ("10.0.0.1", 1234)))  # signalled address is wrong (NAT)
    seen: list[int] = []
    endpoint.sink = lambda source, data, pt, seq, ts, ssrc, marker, now: seen.append(seq)
    endpoint.datagram_received(rtp(1, 160, 0xAAAA, bytes(160)), PHONE_A)
    endpoint.datagram_received(rtp(2, 320, 0xBBBB, bytes(160)), INTRUDER)
    endpoint.datagram_received(rtp(3, 480, 0xAAAA, bytes(160)), PHONE_A)
    assert seen == [1, 3]
    assert endpoint.send_address == PHONE_A  # we answer where the phone really is
    assert (endpoint.foreign_dropped, counters.dropped_latching) == (1, 1)
    assert endpoint.quality().extra["dropped_foreign"] == 1.0


@pytest.mark.parametrize(
    "datagram",
    [b"", b"\x80", b"\x00" * 12, b"\x40" + b"\x00" * 20, b"\x80\xc8\x00\x10" + b"\x00" * 4, b"\xff" * 40],
)
def test_malformed_datagrams_are_counted_and_dropped_never_raised(datagram: bytes) -> None:
    clock, events = FakeClock(), []
    counters = MediaCounters()
    endpoint, transport = make_endpoint("a", clock, events, counters)
    endpoint.configure(params(PCMU, PHONE_A))
    endpoint.datagram_received(datagram, PHONE_A)
    assert counters.dropped_malformed == 1
    assert counters.callback_errors == 0
    assert transport.sent == []


def test_unnegotiated_payload_type_does_not_latch() -> None:
    clock, events = FakeClock(), []
    endpoint, _ = make_endpoint("a", clock, events)
    endpoint.configure(params(PCMU, None))
    endpoint.datagram_received(rtp(1, 160, 1, bytes(160), payload_type=8), INTRUDER)
    assert endpoint.send_address is None and endpoint.invalid_dropped == 1
    endpoint.datagram_received(rtp(1, 160, 2, bytes(160)), PHONE_A)
    assert endpoint.send_address == PHONE_A


def test_malformed_telephone_event_is_counted_not_raised() -> None:
    clock, events = FakeClock(), []
    counters = MediaCounters()
    endpoint, _ = make_endpoint("a", clock, events, counters)
    endpoint.configure(params(PCMU, PHONE_A))
    endpoint.datagram_received(rtp(1, 160, 1, b"\x05\x80", payload_type=101), PHONE_A)
    assert counters.dropped_malformed == 1 and counters.callback_errors == 0 and events == []


# --- relay --------------------------------------------------------------------------------------------


def connect_relay(clock: FakeClock, events: list[MediaEvent], b_event: PayloadFormat | None = TE8_OTHER_PT):
    a, _ = make_endpoint("a", clock, events)
    b, b_wire = make_endpoint("b", clock, events)
    a.configure(params(PCMU, PHONE_A))
    b.configure(params(PCMU, PHONE_B, telephone_event=b_event))
    a.sink = RelayLink(a, b)
    b.sink = RelayLink(b, a)
    return a, b, b_wire


def test_relay_keeps_one_continuous_stream_across_a_source_ssrc_change() -> None:
    clock, events = FakeClock(), []
    a, _b, b_wire = connect_relay(clock, events)
    payloads = []
    for i in range(10):  # first stream from the phone
        payload = bytes([i]) * 160
        payloads.append(payload)
        a.datagram_received(rtp(5000 + i, 1000 + 160 * i, 0x1111, payload), PHONE_A)
        clock.now += 0.02
    clock.now += 0.1  # re-INVITE pause, then the phone restarts with a new SSRC/sequence/timestamp
    for i in range(10):
        payload = bytes([100 + i]) * 160
        payloads.append(payload)
        a.datagram_received(rtp(60000 + i, 777_777 + 160 * i, 0x2222, payload), PHONE_A)
        clock.now += 0.02
    sent = b_wire.packets()
    assert [p.payload for p in sent] == payloads  # packets intact, in order
    assert len({p.ssrc for p in sent}) == 1 and sent[0].ssrc not in (0x1111, 0x2222)
    assert all(seq_diff(n.sequence_number, p.sequence_number) == 1 for p, n in itertools.pairwise(sent))
    steps = [ts_diff(n.timestamp, p.timestamp) for p, n in itertools.pairwise(sent)]
    assert steps[:9] == [160] * 9 and steps[10:] == [160] * 9
    assert steps[9] == round((0.02 + 0.1) * 8000)  # the switch advances by the wall time elapsed
    assert sent[10].marker  # far-end jitter buffers resynchronise on the marker
    assert all(address == PHONE_B for _, address in b_wire.sent)


def test_relay_maps_telephone_event_payload_type_and_reports_the_digit_once() -> None:
    clock, events = FakeClock(), []
    a, _b, b_wire = connect_relay(clock, events)
    for _, packet in digit_packets("7", start_time=0.0, timestamp=8000, duration=0.12):
        a.datagram_received(
            rtp(10 + len(b_wire.sent), 8000, 0x1111, packet.payload, 101, packet.marker), PHONE_A
        )
        clock.now += 0.05
    relayed = b_wire.packets()
    assert {p.payload_type for p in relayed} == {96}
    assert TelephoneEvent.parse(relayed[-1].payload).end
    assert [e for e in events if isinstance(e, DtmfReceived)] == [DtmfReceived("a", "7", 120, "rfc4733")]


def test_digit_is_regenerated_when_the_other_leg_cannot_take_it_as_is() -> None:
    clock, events = FakeClock(), []
    a, b, b_wire = connect_relay(clock, events, b_event=PayloadFormat(97, "telephone-event", 16000))
    assert RelayLink(a, b)._map[101] == -1  # clock rates differ: not relayable
    a.on_digit = lambda digit, duration: b.output.send_dtmf(
        digit, duration, b.params.telephone_event, clock.now
    )
    for _, packet in digit_packets("3", start_time=0.0, timestamp=0, duration=0.1):
        a.datagram_received(rtp(len(events) + 20, 0, 0x1111, packet.payload, 101, packet.marker), PHONE_A)
    for _ in range(30):
        clock.now += 0.02
        b.output.poll_dtmf(clock.now)
    regenerated = b_wire.packets()
    assert regenerated and {p.payload_type for p in regenerated} == {97}
    final = TelephoneEvent.parse(regenerated[-1].payload)
    assert final.end and final.event == 3 and final.duration == 1600  # 100 ms at 16 kHz


def test_hold_stops_sending_and_the_media_timeout() -> None:
    clock, events = FakeClock(), []
    settings = EndpointSettings(media_timeout=5.0, rtcp_interval=1000.0)
    a, _a_wire = make_endpoint("a", clock, events, settings=settings)
    b, b_wire = make_endpoint("b", clock, events, settings=settings)
    a.configure(params(PCMU, PHONE_A))
    b.configure(params(PCMU, PHONE_B, direction=Direction.RECVONLY))  # b's phone put us on hold
    a.sink = RelayLink(a, b)
    a.datagram_received(rtp(1, 160, 1, bytes(160)), PHONE_A)
    assert b_wire.sent == []
    clock.now += 6.0
    assert a.housekeeping(clock.now) == [MediaTimeout("a", 6.0)]
    assert b.housekeeping(clock.now) == []  # on hold: silence is expected
    clock.now += 6.0
    assert a.housekeeping(clock.now) == []  # reported once
    a.datagram_received(rtp(2, 320, 1, bytes(160)), PHONE_A)
    clock.now += 5.5
    assert a.housekeeping(clock.now) == [MediaTimeout("a", 5.5)]  # re-armed by new media


def test_quality_snapshot_reports_loss_and_mos() -> None:
    clock, events = FakeClock(), []
    a, _ = make_endpoint("a", clock, events)
    a.configure(params(PCMU, PHONE_A))
    for i in range(100):
        if i % 10 != 5:  # 10 % loss
            a.datagram_received(rtp(i, 160 * i, 1, bytes(160)), PHONE_A)
        clock.now += 0.02
    snapshot = a.quality()
    assert (snapshot.packets_received, snapshot.packets_lost) == (90, 10)
    assert snapshot.loss_percent == pytest.approx(10.0, abs=0.2)
    assert snapshot.jitter_ms == pytest.approx(0.0, abs=0.01)
    assert snapshot.mos is not None and 2.5 < snapshot.mos < 4.0


# --- transcoding --------------------------------------------------------------------------------------


def tone(rate: int, frequency: float, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def peak_frequency(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.shape[0])))
    return float(np.argmax(spectrum)) * rate / pcm.shape[0]


def run_direction(direction: TranscodeDirection, packets: list[bytes], clock: FakeClock, ssrc: int) -> None:
    for data in packets:
        direction.source.datagram_received(data, PHONE_A if ssrc == 1 else PHONE_B)
        direction.deliver(direction.process(direction.pull(clock.now)), clock.now)
        clock.now += 0.02
    for _ in range(10):  # drain the jitter buffer
        direction.deliver(direction.process(direction.pull(clock.now)), clock.now)
        clock.now += 0.02


def test_pcmu_to_opus_to_pcmu_keeps_a_1khz_tone() -> None:
    clock, events = FakeClock(), []
    a, _ = make_endpoint("a", clock, events)
    b, b_wire = make_endpoint("b", clock, events)
    c, _c_wire = make_endpoint("c", clock, events)
    d, _ = make_endpoint("d", clock, events)
    a.configure(params(PCMU, PHONE_A))
    b.configure(params(OPUS, PHONE_B))
    c.configure(params(OPUS, PHONE_A))
    d.configure(params(PCMU, PHONE_B))
    first = TranscodeDirection(a, b, PCMU, OPUS)
    a.sink = first
    source = tone(8000, 1000.0, 1.0)
    pcmu = [rtp(i, 160 * i, 1, g711.ulaw_encode(source[160 * i : 160 * (i + 1)])) for i in range(50)]
    run_direction(first, pcmu, clock, 1)
    opus_packets = b_wire.packets()
    assert len(opus_packets) >= 45 and {p.payload_type for p in opus_packets} == {111}
    assert all(ts_diff(n.timestamp, p.timestamp) == 960 for p, n in itertools.pairwise(opus_packets))
    second = TranscodeDirection(c, d, OPUS, PCMU)
    c.sink = second
    run_direction(second, [bytes(p) for p in opus_packets], clock, 1)
    back = d.output  # what d sent: PCMU frames
    assert back.send_stats.packet_count >= 40
    sent = [RtpPacket.parse(data) for data, _ in d.rtp_transport.sent]  # type: ignore[union-attr]
    pcm = np.concatenate([g711.ulaw_decode(p.payload) for p in sent])
    steady = pcm[2400:]  # skip codec/resampler start-up
    assert abs(peak_frequency(steady, 8000) - 1000.0) < 20.0
    assert np.sqrt(np.mean(steady.astype(np.float64) ** 2)) > 2000  # the tone, not near-silence


def test_transcoder_conceals_a_lost_packet_instead_of_skipping_time() -> None:
    clock, events = FakeClock(), []
    a, _ = make_endpoint("a", clock, events)
    b, b_wire = make_endpoint("b", clock, events)
    a.configure(params(PCMU, PHONE_A))
    b.configure(params(OPUS, PHONE_B))
    direction = TranscodeDirection(a, b, PCMU, OPUS)
    a.sink = direction
    source = tone(8000, 440.0, 1.0)
    packets = [rtp(i, 160 * i, 1, g711.ulaw_encode(source[160 * i : 160 * (i + 1)])) for i in range(40)]
    del packets[20]
    run_direction(direction, packets, clock, 1)
    assert direction.jitter_buffer.concealed >= 1
    sent = b_wire.packets()
    assert len(sent) >= 38  # the gap was filled, not dropped
    assert all(ts_diff(n.timestamp, p.timestamp) == 960 for p, n in itertools.pairwise(sent))


# --- the fake ---------------------------------------------------------------------------------------


async def test_fake_media_control_records_and_enforces_the_port_rules() -> None:
    if True:  # the fake is async like the port; no sockets, no clock
        fake = FakeMediaControl(max_endpoints=2)
        a = await fake.create_endpoint("c1", "a")
        b = await fake.create_endpoint("c1", "b")
        with pytest.raises(MediaError):
            await fake.create_endpoint("c1", "c")
        await fake.configure(a.endpoint_id, params(PCMU, PHONE_A))
        await fake.connect(a.endpoint_id, b.endpoint_id)
        assert fake.connected(a.endpoint_id, b.endpoint_id)
        with pytest.raises(MediaError):
            await fake.connect(a.endpoint_id, a.endpoint_id)
        await fake.send_dtmf(b.endpoint_id, "5")
        snapshot = await fake.destroy(a.endpoint_id)
        assert not fake.connected(a.endpoint_id, b.endpoint_id)
        with pytest.raises(MediaError):
            await fake.configure(a.endpoint_id, params(PCMU, PHONE_A))
        assert [name for name, _ in fake.calls][:4] == [
            "create_endpoint",
            "create_endpoint",
            "create_endpoint",
            "configure",
        ]
        assert fake.dtmf_sent == [(b.endpoint_id, "5", 100)]
        stream = fake.events()
        assert await anext(stream) == QualityReport(a.endpoint_id, snapshot)


async def test_metrics_are_registered_while_the_plane_lives_and_removed_on_close() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from media.plane import MediaPlane

    registry = CollectorRegistry()
    for _ in range(2):  # a second plane in the same process must be able to register again
        plane = MediaPlane(
            rtp_port_min=41000, rtp_port_max=41100, bind_address="127.0.0.1", registry=registry
        )
        assert b"uc_media_leg_mos" in generate_latest(registry)
        await plane.close()
        assert b"uc_media_" not in generate_latest(registry)


def test_a_detached_endpoint_sends_nothing_and_is_freed_without_the_garbage_collector() -> None:
    clock, events = FakeClock(), list[MediaEvent]()
    endpoint, transport = make_endpoint("a", clock, events)
    endpoint.configure(params(PCMU, PHONE_A))
    output = endpoint.output
    endpoint.detach()
    # A late generated packet (a codec result after the call ended) goes nowhere.
    assert output.send_local(b"\xff" * 160, 0, 160, clock.now) is False
    assert transport.sent == []
    gone = weakref.ref(endpoint)
    gc.disable()
    try:
        del endpoint
        assert gone() is None  # no endpoint <-> stream cycle left for the collector
    finally:
        gc.enable()
