"""RTP phones for ``bench/suites/audio_quality.py``: a sender pacing pre-encoded frames every 20 ms and a
receiver that plays out what arrives through the media plane's jitter buffer and the codec's decoder/PLC.

Receiver model: the socket only records ``(arrival time, datagram)``. Playout is :func:`play_out`, pure:
an ideal 20 ms clock starting at the first arrival hands the jitter buffer every packet that arrived by
each tick, then takes what is due, as the media plane's own decoding path does (``media.transcode``:
up to four items per tick, and one frame more buffer while packets are being lost when the decoder has
in-band FEC); a frame is decoded, a gap (``Conceal``) filled by the codec's in-band FEC from the packet
after it when the jitter buffer already holds that one (Opus), else by its PLC, and the audio is
concatenated — the playout delay shows as a constant offset, removed before scoring. The result
depends only on the arrival times the network (and the media plane) produced, not on the bench
process's own scheduling jitter.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from media.codecs import create_decoder
from media.codecs.base import Pcm
from media.jitterbuffer import Frame, JitterBuffer
from media.rtp import RtpPacket

Address = tuple[str, int]
FRAME_SECONDS = 0.02
# Frames taken from the jitter buffer per tick at most, as media.transcode's decoding path does: after a
# stall playout catches up a little; the jitter buffer drops what is older.
MAX_FRAMES_PER_TICK = 4
_HEADER = struct.Struct("!BBHII")


@dataclass(frozen=True, slots=True)
class RtpStream:
    """The RTP of one sender: payload type, clock rate and timestamp step per 20 ms frame."""

    payload_type: int
    clock_rate: int

    @property
    def samples_per_frame(self) -> int:
        return round(self.clock_rate * FRAME_SECONDS)


def packetize(payloads: Sequence[bytes], stream: RtpStream, seed: int) -> list[bytes]:
    """One RTP datagram per payload: random (seeded) SSRC, first sequence and timestamp; marker on the
    first packet (start of a talkspurt), consecutive sequence numbers and timestamps after it."""
    rng = random.Random(seed)
    ssrc, sequence, timestamp = rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32)
    datagrams = []
    for index, payload in enumerate(payloads):
        marker = 0x80 if index == 0 else 0
        header = _HEADER.pack(
            0x80,
            marker | stream.payload_type,
            (sequence + index) & 0xFFFF,
            (timestamp + index * stream.samples_per_frame) & 0xFFFFFFFF,
            ssrc,
        )
        datagrams.append(header + payload)
    return datagrams


class _Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.arrivals: list[tuple[float, bytes]] = []
        self.ignored = 0
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if len(data) >= 2 and 192 <= data[1] <= 223:
            self.ignored += 1  # RTCP (rtcp-mux) from the media plane: not audio
            return
        self.arrivals.append((self._loop.time(), data))

    def error_received(self, exc: Exception) -> None:
        pass

    @property
    def address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (host, port)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_socket(host: str = "127.0.0.1") -> _Socket:
    """A UDP socket on an ephemeral port that records what it receives (RTCP excepted)."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(_Socket, local_addr=(host, 0))
    return protocol


async def send_paced(sock: _Socket, datagrams: Sequence[bytes], target: Address) -> float:
    """Send one datagram every 20 ms on an absolute schedule (no drift); returns the worst lateness (s)."""
    assert sock.transport is not None
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    worst = 0.0
    for index, datagram in enumerate(datagrams):
        due = start + index * FRAME_SECONDS
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        worst = max(worst, loop.time() - due)
        sock.transport.sendto(datagram, target)
    return worst


@dataclass
class PlayoutStats:
    packets: int = 0
    foreign: int = 0
    played: int = 0
    concealed: int = 0
    concealed_with_fec: int = 0  # of those, rebuilt from the next packet's in-band FEC (Opus)
    catch_up_ticks: int = 0  # ticks that played more than one frame (playout fell behind)
    late: int = 0
    lost: int = 0
    reordered: int = 0
    target_delay_ms: list[float] = field(default_factory=list)


def count_reordered(datagrams: Sequence[bytes]) -> int:
    """RTP packets arriving with a lower sequence number than one already seen (mod 2^16); anything
    shorter than an RTP header is skipped."""
    highest: int | None = None
    count = 0
    for data in datagrams:
        if len(data) < _HEADER.size:
            continue
        sequence = _HEADER.unpack_from(data)[2]
        if highest is None or ((sequence - highest) & 0xFFFF) < 0x8000:
            highest = sequence
        else:
            count += 1
    return count


def play_out(
    arrivals: Sequence[tuple[float, bytes]],
    encoding: str,
    payload_type: int,
    *,
    tail: float = 0.8,
) -> tuple[Pcm, PlayoutStats]:
    """Decode ``arrivals`` (time, datagram) as a phone would (see the module docstring); returns the
    audio at the decoder's sample rate and what the jitter buffer did."""
    stats = PlayoutStats()
    decoder = create_decoder(encoding)
    clock_rate = decoder.clock_rate
    buffer = JitterBuffer(clock_rate, frame_duration=FRAME_SECONDS, fec_reserve=decoder.supports_fec)
    ordered = sorted(arrivals, key=lambda item: item[0])
    accepted: list[bytes] = []
    if not ordered:
        return np.zeros(0, dtype=np.int16), stats
    start = ordered[0][0]
    end = ordered[-1][0] + tail
    out: list[Pcm] = []
    position = 0
    tick = 0
    while True:
        now = start + tick * FRAME_SECONDS
        if now > end:
            break
        while position < len(ordered) and ordered[position][0] <= now:
            arrival, data = ordered[position]
            position += 1
            try:
                packet = RtpPacket.parse(data)
            except ValueError:
                stats.foreign += 1
                continue
            if packet.payload_type != payload_type:
                stats.foreign += 1
                continue
            stats.packets += 1
            accepted.append(data)
            buffer.put(packet, arrival)
        for taken in range(MAX_FRAMES_PER_TICK):
            item = buffer.get(now)
            if item is None:
                break
            if taken == 1:
                stats.catch_up_ticks += 1
            if isinstance(item, Frame):
                out.append(decoder.decode(item.packet.payload))
                stats.played += 1
            else:
                samples = item.samples * decoder.sample_rate // clock_rate
                if item.next_packet is not None and decoder.has_fec(item.next_packet.payload):
                    out.append(decoder.conceal_with_next(item.next_packet.payload, samples))
                    stats.concealed_with_fec += 1
                else:
                    out.append(decoder.conceal(samples))
                stats.concealed += 1
        if tick % 50 == 0:
            stats.target_delay_ms.append(buffer.target_delay * 1000)
        tick += 1
    stats.late = buffer.late
    stats.reordered = count_reordered(accepted)
    stats.lost = buffer.lost
    return np.concatenate(out), stats
