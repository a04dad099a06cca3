"""The media plane on real UDP sockets (127.0.0.1): two fake phones (plain sockets sending RTP built with
media/rtp.py) bridged through ``MediaPlane.connect``. No external services needed."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from media.codecs import create_decoder, g711
from media.control import (
    Direction,
    DtmfReceived,
    MediaError,
    MediaEvent,
    MediaTimeout,
    PayloadFormat,
    PlaybackFinished,
    QualityReport,
    StreamParams,
)
from media.dtmf import TelephoneEvent, digit_packets
from media.plane import MediaPlane
from media.rtp import RtpPacket, seq_diff

PCMU = PayloadFormat(0, "PCMU", 8000)
OPUS = PayloadFormat(111, "opus", 48000, 2)
TE_A = PayloadFormat(101, "telephone-event", 8000)
TE_B = PayloadFormat(96, "telephone-event", 8000)
TE_OPUS = PayloadFormat(110, "telephone-event", 48000)
_ports = itertools.count(0)


class Phone(asyncio.DatagramProtocol):
    """A phone's RTP socket: sends what the test builds, keeps everything it receives."""

    def __init__(self) -> None:
        self.received: list[RtpPacket] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.arrived = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if 192 <= data[1] <= 223:
            return  # RTCP
        self.received.append(RtpPacket.parse(data))
        self.arrived.set()

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]

    def send(self, packet: RtpPacket | bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(bytes(packet), ("127.0.0.1", port))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_phone() -> Phone:
    loop = asyncio.get_running_loop()
    _, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    return phone


@pytest.fixture
async def plane() -> AsyncIterator[MediaPlane]:
    # A fresh port window per test so a late packet of one test cannot reach the next one.
    base = 34000 + 200 * (next(_ports) % 20)
    media = MediaPlane(
        rtp_port_min=base, rtp_port_max=base + 199, media_timeout=0.6, registry=CollectorRegistry()
    )
    yield media
    await media.close()


@pytest.fixture
async def phones() -> AsyncIterator[tuple[Phone, Phone]]:
    a, b = await open_phone(), await open_phone()
    yield a, b
    a.close()
    b.close()


async def bridge(
    plane: MediaPlane,
    a: Phone,
    b: Phone,
    fmt_a: PayloadFormat = PCMU,
    fmt_b: PayloadFormat = PCMU,
    te_a: PayloadFormat | None = TE_A,
    te_b: PayloadFormat | None = TE_B,
) -> tuple[str, int, str, int]:
    leg_a = await plane.create_endpoint("call-1", "a")
    leg_b = await plane.create_endpoint("call-1", "b")
    await plane.configure(leg_a.endpoint_id, StreamParams(*a.address, fmt_a, (fmt_a,), te_a))
    await plane.configure(leg_b.endpoint_id, StreamParams(*b.address, fmt_b, (fmt_b,), te_b))
    await plane.connect(leg_a.endpoint_id, leg_b.endpoint_id)
    return leg_a.endpoint_id, leg_a.rtp_port, leg_b.endpoint_id, leg_b.rtp_port


async def wait_for(condition: Callable[[], bool], limit: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def next_event(plane: MediaPlane, kind: type[MediaEvent], limit: float = 3.0) -> MediaEvent:
    async def find() -> MediaEvent:
        async for event in plane.events():
            if isinstance(event, kind):
                return event
        raise AssertionError("event stream ended")

    return await asyncio.wait_for(find(), limit)


async def queued_events(plane: MediaPlane) -> list[MediaEvent]:
    """Everything published so far and not yet read."""
    stream = plane.events()
    events: list[MediaEvent] = []
    while True:
        try:
            events.append(await asyncio.wait_for(anext(stream), 0.05))
        except TimeoutError:
            return events


def tone(rate: int, frequency: float, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def peak_frequency(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.shape[0])))
    return float(np.argmax(spectrum)) * rate / pcm.shape[0]


async def test_g711_relay_both_directions_keeps_packets_intact(
    plane: MediaPlane, phones: tuple[Phone, Phone]
) -> None:
    a, b = phones
    id_a, port_a, _id_b, port_b = await bridge(plane, a, b)
    assert plane.connection_mode(id_a) == "relay"
    sent_ab = [bytes([i]) * 160 for i in range(20)]
    sent_ba = [bytes([200 - i]) * 160 for i in range(20)]
    for i in range(20):
        a.send(RtpPacket(0, 1000 + i, 160 * i, 0xA, sent_ab[i]), port_a)
        b.send(RtpPacket(0, 7000 + i, 9000 + 160 * i, 0xB, sent_ba[i]), port_b)
        await asyncio.sleep(0.005)
    await wait_for(lambda: len(a.received) == 20 and len(b.received) == 20)
    assert [p.payload for p in b.received] == sent_ab
    assert [p.payload for p in a.received] == sent_ba
    for received in (a.received, b.received):
        assert len({p.ssrc for p in received}) == 1
        assert all(
            seq_diff(n.sequence_number, p.sequence_number) == 1 for p, n in itertools.pairwise(received)
        )
        assert {p.payload_type for p in received} == {0}
    assert plane.stats()["callback_errors"] == 0


async def test_pcmu_opus_transcoding_preserves_the_tone_both_ways(
    plane: MediaPlane, phones: tuple[Phone, Phone]
) -> None:
    a, b = phones
    id_a, port_a, _id_b, port_b = await bridge(plane, a, b, PCMU, OPUS, TE_A, TE_OPUS)
    assert plane.connection_mode(id_a) == "transcode"
    to_b = tone(8000, 1000.0, 1.2)
    to_a = tone(48000, 600.0, 1.2)
    for i in range(60):
        a.send(RtpPacket(0, i, 160 * i, 0xA, g711.ulaw_encode(to_b[160 * i : 160 * (i + 1)])), port_a)
        opus_frame = plane_encoder_frame(to_a[960 * i : 960 * (i + 1)])
        b.send(RtpPacket(111, i, 960 * i, 0xB, opus_frame), port_b)
        await asyncio.sleep(0.02)
    await wait_for(lambda: len(b.received) >= 45 and len(a.received) >= 45)
    assert {p.payload_type for p in b.received} == {111}
    assert {p.payload_type for p in a.received} == {0}
    decoder = create_decoder("opus")
    at_b = np.concatenate([decoder.decode(p.payload) for p in b.received])
    at_a = np.concatenate([g711.ulaw_decode(p.payload) for p in a.received])
    assert abs(peak_frequency(at_b[48000 // 5 :], 48000) - 1000.0) < 20.0
    assert abs(peak_frequency(at_a[8000 // 5 :], 8000) - 600.0) < 20.0


_opus_encoder = None


def plane_encoder_frame(pcm: np.ndarray) -> bytes:
    """The fake Opus phone's encoder (one for the whole test run keeps its state continuous)."""
    global _opus_encoder
    if _opus_encoder is None:
        from media.codecs import create_encoder

        _opus_encoder = create_encoder("opus")
    return _opus_encoder.encode(pcm)


async def send_digit(
    phone: Phone, port: int, digit: str, first_sequence: int, payload_type: int = 101
) -> None:
    for index, (_, packet) in enumerate(digit_packets(digit, start_time=0.0, timestamp=16000, duration=0.1)):
        phone.send(
            RtpPacket(
                payload_type, first_sequence + index, packet.timestamp, 0xA, packet.payload, packet.marker
            ),
            port,
        )
        await asyncio.sleep(0.02)


async def test_rfc4733_digit_is_reported_once_and_relayed_with_the_other_legs_payload_type(
    plane: MediaPlane, phones: tuple[Phone, Phone]
) -> None:
    a, b = phones
    id_a, port_a, _, _ = await bridge(plane, a, b)
    await send_digit(a, port_a, "5", 100)
    event = await next_event(plane, DtmfReceived)
    assert event == DtmfReceived(id_a, "5", 100, "rfc4733")
    await wait_for(lambda: any(TelephoneEvent.parse(p.payload).end for p in b.received))
    assert {p.payload_type for p in b.received} == {96}
    assert {TelephoneEvent.parse(p.payload).event for p in b.received} == {5}
    await asyncio.sleep(0.6)  # the receiver's timeout passes: the digit must not be reported again
    assert not [e for e in await queued_events(plane) if isinstance(e, DtmfReceived)]


async def test_digit_is_regenerated_towards_a_transcoded_leg(
    plane: MediaPlane, phones: tuple[Phone, Phone]
) -> None:
    a, b = phones
    id_a, port_a, _, _ = await bridge(plane, a, b, PCMU, OPUS, TE_A, TE_OPUS)
    await send_digit(a, port_a, "9", 300)
    assert await next_event(plane, DtmfReceived) == DtmfReceived(id_a, "9", 100, "rfc4733")
    await wait_for(
        lambda: any(p.payload_type == 110 and TelephoneEvent.parse(p.payload).end for p in b.received)
    )
    events = [TelephoneEvent.parse(p.payload) for p in b.received if p.payload_type == 110]
    assert {e.event for e in events} == {9}
    assert max(e.duration for e in events) == 4800  # 100 ms at telephone-event/48000


async def test_send_dtmf_reaches_the_phone(plane: MediaPlane, phones: tuple[Phone, Phone]) -> None:
    a, b = phones
    _, port_a, id_b, _ = await bridge(plane, a, b)
    a.send(RtpPacket(0, 1, 160, 0xA, bytes(160)), port_a)
    await plane.send_dtmf(id_b, "#", 80)
    await wait_for(
        lambda: any(TelephoneEvent.parse(p.payload).end for p in b.received if p.payload_type == 96)
    )
    with pytest.raises(MediaError):
        await plane.send_dtmf(id_b, "x")


async def test_media_timeout_fires_only_while_sendrecv(
    plane: MediaPlane, phones: tuple[Phone, Phone]
) -> None:
    a, b = phones
    id_a, port_a, id_b, _port_b = await bridge(plane, a, b)
    await plane.configure(id_b, StreamParams(*b.address, PCMU, (PCMU,), TE_B, Direction.SENDONLY))
    for i in range(5):
        a.send(RtpPacket(0, i, 160 * i, 0xA, bytes(160)), port_a)
    event = await next_event(plane, MediaTimeout, limit=3.0)
    assert isinstance(event, MediaTimeout) and event.endpoint_id == id_a and event.silent_seconds >= 0.6
    await asyncio.sleep(0.8)
    timeouts = [e for e in await queued_events(plane) if isinstance(e, MediaTimeout)]
    assert all(e.endpoint_id != id_b for e in timeouts)  # b is on hold: no timeout


async def test_destroy_returns_sane_quality_and_frees_the_ports(
    plane: MediaPlane, phones: tuple[Phone, Phone]
) -> None:
    a, b = phones
    id_a, port_a, _id_b, _ = await bridge(plane, a, b)
    free_before = plane.stats()["ports_free"]
    for i in range(100):
        if i % 20 != 7:  # 5 % loss
            a.send(RtpPacket(0, i, 160 * i, 0xA, bytes(160)), port_a)
        await asyncio.sleep(0.002)
    await wait_for(lambda: len(b.received) == 95)
    snapshot = await plane.destroy(id_a)
    assert snapshot.packets_received == 95 and snapshot.packets_lost == 5
    assert snapshot.loss_percent == pytest.approx(5.0, abs=0.1)
    assert 0.0 <= snapshot.jitter_ms < 50.0
    assert snapshot.mos is not None and 2.5 < snapshot.mos < 4.4
    assert snapshot.codec == "PCMU"
    assert plane.stats()["ports_free"] == free_before + 1
    report = await next_event(plane, QualityReport)
    assert report == QualityReport(id_a, snapshot)
    with pytest.raises(MediaError):
        await plane.destroy(id_a)


async def test_packets_from_an_unexpected_source_after_latching_are_ignored(
    plane: MediaPlane, phones: tuple[Phone, Phone]
) -> None:
    a, b = phones
    intruder = await open_phone()
    try:
        id_a, port_a, _, _ = await bridge(plane, a, b)
        a.send(RtpPacket(0, 1, 160, 0xA, b"\x01" * 160), port_a)
        await wait_for(lambda: len(b.received) == 1)
        for i in range(5):
            intruder.send(RtpPacket(0, 2 + i, 320, 0xEE, b"\xee" * 160), port_a)
        intruder.send(b"\x80garbage", port_a)
        a.send(RtpPacket(0, 2, 320, 0xA, b"\x02" * 160), port_a)
        await wait_for(lambda: len(b.received) == 2)
        await asyncio.sleep(0.05)
        assert [p.payload[0] for p in b.received] == [1, 2]
        stats = plane.stats()
        assert stats["dropped_latching"] == 5 and stats["dropped_malformed"] == 1
        assert plane.endpoint(id_a).quality().extra["dropped_foreign"] == 5.0
    finally:
        intruder.close()


async def test_echo_and_playback(plane: MediaPlane, phones: tuple[Phone, Phone]) -> None:
    a, _ = phones
    leg = await plane.create_endpoint("call-echo", "a")
    await plane.configure(leg.endpoint_id, StreamParams(*a.address, PCMU, (PCMU,), TE_A))
    await plane.echo(leg.endpoint_id)
    for i in range(5):
        a.send(RtpPacket(0, i, 160 * i, 0xA, bytes([i]) * 160), leg.rtp_port)
    await wait_for(lambda: len(a.received) == 5)
    assert [p.payload[0] for p in a.received] == list(range(5))
    a.received.clear()
    playback_id = await plane.play(leg.endpoint_id, "tone:440:200")
    finished = await next_event(plane, PlaybackFinished)
    assert finished == PlaybackFinished(leg.endpoint_id, playback_id)
    assert len(a.received) >= 9
    pcm = np.concatenate([g711.ulaw_decode(p.payload) for p in a.received if p.payload[0] not in range(5)])
    assert abs(peak_frequency(pcm, 8000) - 440.0) < 20.0
    with pytest.raises(MediaError):
        await plane.play(leg.endpoint_id, "tone:banana")


async def test_port_exhaustion_is_a_clear_media_error() -> None:
    small = MediaPlane(rtp_port_min=33900, rtp_port_max=33903)
    try:
        await small.create_endpoint("c", "1")
        await small.create_endpoint("c", "2")
        with pytest.raises(MediaError, match="no free RTP port"):
            await small.create_endpoint("c", "3")
    finally:
        with contextlib.suppress(Exception):
            await small.close()


# --- the pre-opened socket pool ---------------------------------------------------------------------------


async def test_pooled_pairs_are_bound_once_and_reused_least_recently_released_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    pooled = MediaPlane(rtp_port_min=33800, rtp_port_max=33899, rtp_socket_pool=3, registry=registry)
    try:
        await pooled.start()
        assert pooled.stats()["rtp_pool_idle"] == 3 and pooled.stats()["rtp_pairs_opened"] == 3
        first = await pooled.create_endpoint("c1", "a")
        await pooled.destroy(first.endpoint_id)
        ports = []
        for index in range(3):
            leg = await pooled.create_endpoint(f"c{index + 2}", "a")
            ports.append(leg.rtp_port)
            await pooled.destroy(leg.endpoint_id)
        # The pair just released goes to the back of the queue: two others come first.
        assert ports[:2] == sorted({33800, 33802, 33804} - {first.rtp_port})
        assert ports[2] == first.rtp_port
        assert pooled.stats()["rtp_pairs_opened"] == 3  # nothing bound after warm-up
        assert registry.get_sample_value("uc_media_rtp_pairs_bound_total") == 3
        assert registry.get_sample_value("uc_media_rtp_pool_idle") == 3
        # More calls than idle pairs: extra pairs are bound, and closed again beyond the pool size. The
        # operator is told once (not per bind) that the pool is too small, and the counter shows it.
        with caplog.at_level(logging.WARNING, logger="media.socketpool"):
            legs = [await pooled.create_endpoint("many", str(index)) for index in range(5)]
        assert pooled.stats()["rtp_pairs_opened"] == 5
        assert registry.get_sample_value("uc_media_rtp_pairs_bound_total") == 5
        assert registry.get_sample_value("uc_media_rtp_pool_idle") == 0
        dry = [r for r in caplog.records if "RTP socket pool empty" in r.getMessage()]
        assert len(dry) == 1 and "3 pairs pooled" in dry[0].getMessage()
        for leg in legs:
            await pooled.destroy(leg.endpoint_id)
        assert pooled.stats()["rtp_pool_idle"] == 3
        free = pooled.stats()["ports_free"]
        assert free == 50  # all 50 pairs of the range available again (3 of them bound and idle)
    finally:
        await pooled.close()
    assert pooled.stats()["rtp_pool_idle"] == 0


async def test_the_pool_keeps_the_pairs_a_load_above_its_size_holds_and_shrinks_back_after() -> None:
    pooled = MediaPlane(rtp_port_min=33500, rtp_port_max=33599, rtp_socket_pool=1)
    try:
        await pooled.start()
        legs = [await pooled.create_endpoint("busy", str(index)) for index in range(4)]
        assert pooled.stats()["rtp_pairs_opened"] == 4  # 1 at start, 3 on demand
        # Two calls end while two others still hold pairs: the load is above the pool size, so their
        # pairs are kept for the next calls, which bind nothing.
        for leg in legs[:2]:
            await pooled.destroy(leg.endpoint_id)
        assert pooled.stats()["rtp_pool_idle"] == 2
        legs[:2] = [await pooled.create_endpoint("busy", f"next{index}") for index in range(2)]
        assert pooled.stats()["rtp_pairs_opened"] == 4
        for leg in legs:
            await pooled.destroy(leg.endpoint_id)
        assert pooled.stats()["rtp_pool_idle"] == 1  # back to its size once the load is gone
        assert pooled.stats()["ports_free"] == 50
    finally:
        await pooled.close()


async def test_a_released_pair_drops_late_packets_and_relatches_for_the_next_call(
    phones: tuple[Phone, Phone],
) -> None:
    a, b = phones
    pooled = MediaPlane(rtp_port_min=33700, rtp_port_max=33701, rtp_socket_pool=1)
    c = await open_phone()
    try:
        # One pair in the range: the second call necessarily gets the first call's sockets.
        first = await pooled.create_endpoint("call-1", "a")
        await pooled.configure(first.endpoint_id, StreamParams(*a.address, PCMU, (PCMU,)))
        await pooled.echo(first.endpoint_id)
        a.send(RtpPacket(0, 1, 160, 0xA, b"\x01" * 160), first.rtp_port)
        await wait_for(lambda: len(a.received) == 1)
        await pooled.destroy(first.endpoint_id)

        dropped = pooled.stats()["dropped_unroutable"]
        a.send(RtpPacket(0, 2, 320, 0xA, b"\x02" * 160), first.rtp_port)  # late packet of call 1
        await wait_for(lambda: pooled.stats()["dropped_unroutable"] == dropped + 1)

        second = await pooled.create_endpoint("call-2", "a")
        assert second.rtp_port == first.rtp_port
        await pooled.configure(second.endpoint_id, StreamParams(*c.address, PCMU, (PCMU,)))
        await pooled.echo(second.endpoint_id)
        c.send(RtpPacket(0, 7, 160, 0xC, b"\x07" * 160), second.rtp_port)
        await wait_for(lambda: len(c.received) == 1)
        a.send(RtpPacket(0, 3, 480, 0xA, b"\x03" * 160), second.rtp_port)  # call 1's phone, too late
        c.send(RtpPacket(0, 8, 320, 0xC, b"\x08" * 160), second.rtp_port)
        await wait_for(lambda: len(c.received) == 2)
        await asyncio.sleep(0.05)
        assert [p.payload[0] for p in c.received] == [7, 8]
        assert [p.payload[0] for p in a.received] == [1]
        assert pooled.endpoint(second.endpoint_id).quality().extra["dropped_foreign"] == 1.0
        assert not b.received
    finally:
        c.close()
        await pooled.close()


async def test_without_a_pool_each_endpoint_binds_and_closes_its_own_sockets() -> None:
    unpooled = MediaPlane(rtp_port_min=33600, rtp_port_max=33601, rtp_socket_pool=0)
    try:
        leg = await unpooled.create_endpoint("c", "a")
        await unpooled.destroy(leg.endpoint_id)
        await asyncio.sleep(0)  # transports close on the next loop iteration
        for port in (leg.rtp_port, leg.rtcp_port):
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.bind(("127.0.0.1", port))  # free again: the plane closed it
            finally:
                probe.close()
        again = await unpooled.create_endpoint("c", "b")
        assert again.rtp_port == leg.rtp_port
        assert unpooled.stats()["rtp_pairs_opened"] == 2
    finally:
        await unpooled.close()
