"""Transcoding between endpoints whose send formats differ (e.g. Opus 48 kHz ↔ PCMU 8 kHz).

One :class:`TranscodeDirection` per direction: the source endpoint's RTP goes into a jitter buffer
(``media.jitterbuffer``); every 20 ms tick takes what is due — a payload, or a gap to conceal — and the
codec chain turns it into frames for the target: decode (for a gap: the codec's in-band FEC from the
packet after it when the jitter buffer already holds that one — Opus LBRR, for which the buffer keeps one
frame more while the source is losing packets — else its PLC) → resample →
re-frame to the target's 20 ms → encode → send through the target's local source. The target's encoder
follows the target's fmtp (Opus: FEC when it declared ``useinbandfec=1``). Telephone-events do
not enter the chain: the source endpoint reports the digit and the plane regenerates it on the target
(``OutgoingStream.send_dtmf``).

Where the codec work runs — measured on this machine (AMD EPYC, 2 vCPUs shared with other work, PyAV
Opus encoder and opuslib decoder at complexity 10; ``uc-edge bench run rtp-relay``, figures
``transcode_us_per_call_tick`` and ``loop_lag_p99_ms_*``):

* one PCMU↔Opus call, both directions, costs ≈ 0.68 ms of CPU per 20 ms tick (profile: Opus encode
  ≈ 0.28 ms, the two resamplers ≈ 0.26 ms with their numpy overhead on 20 ms frames, Opus decode
  ≈ 0.05 ms, jitter buffer + G.711 + packetising the rest): about 30 transcoded calls fill one core;
* codec work inline on the event loop: a 1 ms sleep overshoots by 10.3 ms (p99) with 10 transcoded
  calls and 14.9 ms with 20 — every signalling message would wait for whole ticks;
* in the worker thread: 3.5 ms (p99) with 10 calls — libopus (ctypes, PyAV) releases the GIL, the
  small-array numpy steps mostly do not, so the loop still competes for the GIL; with 20 calls on this
  shared core the worker fell behind (64 overrun ticks in 4 s).

So :class:`CodecEngine` runs the codec chain in one worker thread when ``use_thread`` is set (the plane's
default). The loop only pulls from the jitter buffers and sends. The worker keeps ticks in order; when it
falls more than ``max_batches_in_flight`` ticks behind, a tick is skipped (the far end conceals it)
instead of queuing without bound (``overruns`` counts it). Beyond ~20 transcoded calls per node a
process pool (or moving the resampler to a C implementation) is the next step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable

import numpy as np

from media.codecs import CodecError, Resampler, create_decoder, create_encoder
from media.codecs.base import Pcm
from media.control import PayloadFormat
from media.endpoint import RtpEndpoint
from media.jitterbuffer import Conceal, JitterBuffer
from media.rtp import RtpPacket

log = logging.getLogger(__name__)

WorkItem = bytes | Conceal  # a payload to decode, or a gap (source clock) to conceal, maybe by FEC
MAX_FRAMES_PER_TICK = 4  # after a stall, catch up a little; the jitter buffer drops what is older


class TranscodeDirection:
    """source endpoint → target endpoint through decode/resample/encode; see the module docstring."""

    def __init__(
        self,
        source: RtpEndpoint,
        target: RtpEndpoint,
        source_format: PayloadFormat,
        target_format: PayloadFormat,
    ) -> None:
        self.source = source
        self.target = target
        self.source_format = source_format
        self.target_format = target_format
        ptime = source.params.ptime_ms if source.params is not None else 20
        try:
            self._decoder = create_decoder(source_format.encoding)
            self._encoder = create_encoder(target_format.encoding, fmtp=target_format.fmtp)
        except (CodecError, ValueError) as exc:
            raise ValueError(
                f"cannot transcode {source_format.encoding} → {target_format.encoding}: {exc}"
            ) from exc
        self.jitter_buffer = JitterBuffer(
            source_format.clock_rate, frame_duration=ptime / 1000.0, fec_reserve=self._decoder.supports_fec
        )
        self._resampler = Resampler(self._decoder.sample_rate, self._encoder.sample_rate)
        self._pending: Pcm = np.zeros(0, dtype=np.int16)
        self._frame_samples = self._encoder.samples_per_frame
        self.closed = False
        self.malformed = 0
        self.decode_errors = 0
        self.frames_out = 0
        self.concealed_with_fec = 0
        """Gaps rebuilt from the in-band FEC of the packet after them (the others got the codec's PLC)."""

    # -- loop thread ------------------------------------------------------------------------------------

    def __call__(
        self,
        source: RtpEndpoint,
        data: bytes,
        payload_type: int,
        sequence: int,
        timestamp: int,
        ssrc: int,
        marker: bool,
        now: float,
    ) -> None:
        """The source endpoint's sink: audio of the source codec goes into the jitter buffer."""
        if payload_type != self.source_format.payload_type:
            return  # telephone-event (regenerated by the plane) or a codec we did not set up
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            self.malformed += 1
            return
        self.jitter_buffer.put(packet, now)

    def pull(self, now: float) -> list[WorkItem]:
        items: list[WorkItem] = []
        buffer = self.jitter_buffer
        for _ in range(MAX_FRAMES_PER_TICK):
            item = buffer.get(now)
            if item is None:
                break
            items.append(item if isinstance(item, Conceal) else item.packet.payload)
        return items

    def deliver(self, payloads: list[bytes], now: float) -> None:
        if self.closed:
            return
        output = self.target.output
        if output.local_owner is not None:
            return  # a playback holds the target stream
        step = self._encoder.timestamp_increment
        for payload in payloads:
            output.send_local(payload, self.target_format.payload_type, step, now)

    # -- codec thread (touches only the codec state) ------------------------------------------------------

    def process(self, items: list[WorkItem]) -> list[bytes]:
        decoder = self._decoder
        chunks: list[Pcm] = [self._pending] if self._pending.shape[0] else []
        for item in items:
            try:
                pcm = self._conceal(item) if isinstance(item, Conceal) else decoder.decode(item)
            except CodecError:
                self.decode_errors += 1
                pcm = decoder.conceal()
            chunks.append(self._resampler.process(pcm))
        if not chunks:
            return []
        pending = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        size = self._frame_samples
        payloads: list[bytes] = []
        start = 0
        while pending.shape[0] - start >= size:
            payloads.append(self._encoder.encode(pending[start : start + size]))
            start += size
        self._pending = pending[start:].copy()
        self.frames_out += len(payloads)
        return payloads

    def _conceal(self, gap: Conceal) -> Pcm:
        decoder = self._decoder
        samples = max(1, gap.samples * decoder.sample_rate // self.source_format.clock_rate)
        following = gap.next_packet
        if following is not None and decoder.has_fec(following.payload):
            try:
                pcm = decoder.conceal_with_next(following.payload, samples)
            except CodecError:
                pass  # a bad next packet is counted when it is decoded in its own turn
            else:
                self.concealed_with_fec += 1
                return pcm
        return decoder.conceal(samples)

    @property
    def jitter_buffer_delay(self) -> float:
        return self.jitter_buffer.target_delay


Batch = list[tuple[TranscodeDirection, list[WorkItem]]]


def _run_batch(batch: Batch) -> list[tuple[TranscodeDirection, list[bytes]]]:
    results = []
    for direction, items in batch:
        try:
            results.append((direction, direction.process(items)))
        except Exception:
            log.exception("transcoding failed for %s", direction.source.endpoint_id)
    return results


class CodecEngine:
    """Runs every transcoding direction once per media clock tick, inline or in one worker thread."""

    def __init__(
        self, clock: Callable[[], float], *, use_thread: bool, max_batches_in_flight: int = 3
    ) -> None:
        self._clock = clock
        self._directions: set[TranscodeDirection] = set()
        self._executor = (
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="media-codec")
            if use_thread
            else None
        )
        self._in_flight = 0
        self._max_in_flight = max_batches_in_flight
        self.overruns = 0
        self.ticks = 0
        self.busy_seconds = 0.0

    @property
    def sessions(self) -> int:
        return len(self._directions)

    def add(self, direction: TranscodeDirection) -> None:
        self._directions.add(direction)

    def remove(self, direction: TranscodeDirection) -> None:
        direction.closed = True
        self._directions.discard(direction)

    def __bool__(self) -> bool:
        return bool(self._directions)

    def tick(self, now: float) -> None:
        self.ticks += 1
        batch: Batch = []
        for direction in self._directions:
            items = direction.pull(now)
            if items:
                batch.append((direction, items))
        if not batch:
            return
        executor = self._executor
        if executor is None:
            began = self._clock()
            for direction, payloads in _run_batch(batch):
                direction.deliver(payloads, now)
            self.busy_seconds += self._clock() - began
            return
        if self._in_flight >= self._max_in_flight:
            self.overruns += 1
            return
        self._in_flight += 1
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(executor, _run_batch, batch)
        future.add_done_callback(self._delivered)

    def _delivered(self, future: asyncio.Future[list[tuple[TranscodeDirection, list[bytes]]]]) -> None:
        self._in_flight -= 1
        if future.cancelled() or future.exception() is not None:
            return
        now = self._clock()
        for direction, payloads in future.result():
            direction.deliver(payloads, now)

    def close(self) -> None:
        for direction in self._directions:
            direction.closed = True
        self._directions.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
