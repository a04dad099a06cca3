"""codecs: cost of one 20 ms frame through each codec step of the media plane, on one core.

* G.711 µ-law / A-law encode and decode (numpy tables; decode includes the PLC's history update);
* Opus encode and decode at 48 kHz mono, 32 kbit/s, complexity 10, FEC on, for both backends — PyAV's
  bundled libopus and opuslib over the system libopus — with their ratio, plus opuslib's own
  ``Decoder.decode`` wrapper for reference (it copies samples through Python lists);
* concealment of one lost frame (G.711 pitch repetition, Opus PLC per backend);
* resampling 48 → 8 kHz and 8 → 48 kHz (the Opus ↔ PCMU transcoding legs).

Every step is checked before it is timed (G.711 against hand vectors of ITU-T G.711, a 1 kHz tone
keeps its frequency through Opus and the resampler). Each figure is the best of interleaved repeats of
the mean µs per frame. The result says which Opus backend is faster per direction and whether the defaults in
``media.codecs.opus`` agree.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import numpy as np

from bench.framework import Suite, SuiteContext, SuiteResult, monotonic
from media.codecs import g711, opus
from media.codecs.base import Decoder, Pcm
from media.codecs.resample import Resampler

T = TypeVar("T")
FRAME_MS = 20
# Budget per frame for one codec step: a transcoded call runs decode + resample + encode per direction
# every 20 ms; 50 such legs per core leave 400 µs per leg-frame. G.711 steps should be negligible.
TARGETS_US = {
    "g711_ulaw_encode_us": 10.0,
    "g711_ulaw_decode_us": 15.0,
    "g711_alaw_encode_us": 10.0,
    "g711_alaw_decode_us": 15.0,
    "resample_48k_to_8k_us": 100.0,
    "resample_8k_to_48k_us": 100.0,
}
TARGET_OPUS_ENCODE_US = 400.0
TARGET_OPUS_DECODE_US = 100.0


def speech_like(rate: int, seconds: float, seed: int = 3) -> Pcm:
    """A voiced sound (harmonics of a 110-140 Hz gliding pitch) plus a little noise: gives Opus real
    work, unlike a pure tone or silence."""
    n = int(rate * seconds)
    t = np.arange(n) / rate
    f0 = 125.0 + 15.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    harmonics = range(1, int(3400 / 140))
    signal = sum((0.75**k) * np.sin(k * phase) for k in harmonics)
    signal = signal / np.max(np.abs(signal)) * 9000
    signal += np.random.default_rng(seed).normal(0.0, 300.0, n)
    pcm: Pcm = np.clip(signal, -32768, 32767).astype(np.int16)
    return pcm


def tone(rate: int, frequency: float, seconds: float, amplitude: float = 8000.0) -> Pcm:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def peak_frequency(pcm: Pcm, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.shape[0])))
    return float(np.argmax(spectrum)) * rate / int(pcm.shape[0])


def frames_of(pcm: Pcm, rate: int) -> list[Pcm]:
    size = rate * FRAME_MS // 1000
    return [pcm[i : i + size] for i in range(0, pcm.shape[0] - size + 1, size)]


def cost_us(step: Callable[[int], object], loops: int) -> float:
    """Mean µs of ``step(i)`` over ``loops`` calls."""
    began = monotonic()
    for i in range(loops):
        step(i)
    return (monotonic() - began) / loops * 1e6


# --- correctness checks (refuse to time wrong code) ------------------------------------------------


def check_g711() -> None:
    vectors = [
        (g711.ulaw_encode(np.array([0, 32767, -32768], np.int16)), b"\xff\x80\x00"),
        (g711.alaw_encode(np.array([0, 32767, -32768], np.int16)), b"\xd5\xaa\x2a"),
    ]
    decoded = [
        (g711.ulaw_decode(b"\xff\x80\x00").tolist(), [0, 32124, -32124]),
        (g711.alaw_decode(b"\xd5\xaa\x2a").tolist(), [8, 32256, -32256]),
    ]
    if any(got != want for got, want in vectors) or any(got != want for got, want in decoded):
        raise RuntimeError("G.711 tables disagree with the ITU-T G.711 vectors")


def check_opus(backend: str) -> None:
    encoder = opus.create_opus_encoder(backend)
    decoder = opus.create_opus_decoder(backend)
    signal = tone(48000, 1000.0, 0.5)
    decoded = np.concatenate([decoder.decode(encoder.encode(f)) for f in frames_of(signal, 48000)])
    found = peak_frequency(decoded[4800:], 48000)
    if abs(found - 1000.0) > 20.0:
        raise RuntimeError(f"Opus ({backend}) turned a 1 kHz tone into {found:.0f} Hz")


def check_resampler(rate_in: int, rate_out: int) -> None:
    resampler = Resampler(rate_in, rate_out)
    out = np.concatenate([resampler.process(f) for f in frames_of(tone(rate_in, 1000.0, 0.5), rate_in)])
    found = peak_frequency(out[out.shape[0] // 4 :], rate_out)
    if abs(found - 1000.0) > 20.0:
        raise RuntimeError(f"resampler {rate_in}->{rate_out} turned 1 kHz into {found:.0f} Hz")


LOSS_PATTERN = np.random.default_rng(11).random(200) < 0.03


def decode_with_loss(decoder: Decoder, packets: list[bytes], i: int) -> object:
    """Frame ``i`` of a stream losing 3 % of its packets: decoded, or concealed — from the next packet's
    FEC when the decoder can — as a receiver with a one-packet jitter buffer would."""
    if LOSS_PATTERN[i % LOSS_PATTERN.shape[0]]:
        if decoder.supports_fec:
            return decoder.conceal_with_next(packets[(i + 1) % len(packets)])
        return decoder.conceal()
    return decoder.decode(packets[i % len(packets)])


def cycling(step: Callable[[T], object], items: list[T]) -> Callable[[int], object]:
    """Call ``i`` of a timed loop: ``step`` on the items in turn."""

    def call(i: int) -> object:
        return step(items[i % len(items)])

    return call


def loss_then_good(decoder: Decoder, packets: list[bytes]) -> Callable[[int], object]:
    """Alternate a lost frame and a good one, so every timed concealment starts a fresh loss (the
    costly case: the pitch search or the PLC setup runs each time)."""

    def call(i: int) -> object:
        return decoder.conceal() if i % 2 == 0 else decoder.decode(packets[i % len(packets)])

    return call


# --- the run ---------------------------------------------------------------------------------------


def run(ctx: SuiteContext) -> SuiteResult:
    loops = ctx.param("loops", 200 if ctx.quick else 2000)
    repeats = ctx.param("repeats", 3 if ctx.quick else 7)
    if loops < 1 or repeats < 1:
        raise ValueError("need loops >= 1 and repeats >= 1")
    backends = opus.available_backends()
    ctx.log(f"Opus backends available: {', '.join(backends) or 'none'}")

    check_g711()
    for backend in backends:
        check_opus(backend)
    check_resampler(48000, 8000)
    check_resampler(8000, 48000)

    result = SuiteResult()
    steps: dict[str, Callable[[int], object]] = {}

    narrow = frames_of(speech_like(8000, 1.0), 8000)
    wide = frames_of(speech_like(48000, 1.0), 48000)
    g711_codecs: tuple[tuple[str, Callable[[Pcm], bytes], Decoder], ...] = (
        ("ulaw", g711.ulaw_encode, g711.pcmu_decoder()),
        ("alaw", g711.alaw_encode, g711.pcma_decoder()),
    )
    for law, encode, decoder in g711_codecs:
        steps[f"g711_{law}_encode_us"] = cycling(encode, narrow)
        steps[f"g711_{law}_decode_us"] = cycling(decoder.decode, [encode(f) for f in narrow])
    plc_decoder = g711.pcmu_decoder()
    for payload in (g711.ulaw_encode(f) for f in narrow[:5]):
        plc_decoder.decode(payload)
    steps["g711_plc_conceal_us"] = loss_then_good(plc_decoder, [g711.ulaw_encode(narrow[5])])

    for backend in backends:
        encoder = opus.create_opus_encoder(backend)
        packets = [encoder.encode(f) for f in wide]
        steps[f"opus_{backend}_encode_us"] = cycling(encoder.encode, wide)
        steps[f"opus_{backend}_decode_us"] = cycling(opus.create_opus_decoder(backend).decode, packets)
        concealer = opus.create_opus_decoder(backend)
        concealer.decode(packets[0])
        steps[f"opus_{backend}_conceal_us"] = loss_then_good(concealer, packets)
        steps[f"opus_{backend}_decode_3pct_loss_us"] = partial(
            decode_with_loss, opus.create_opus_decoder(backend), packets
        )
        if backend == "opuslib":
            import opuslib

            wrapper = opuslib.Decoder(48000, 1)
            steps["opuslib_wrapper_decode_us"] = cycling(partial(wrapper.decode, frame_size=960), packets)

    down, up = Resampler(48000, 8000), Resampler(8000, 48000)
    steps["resample_48k_to_8k_us"] = cycling(down.process, wide)
    steps["resample_8k_to_48k_us"] = cycling(up.process, narrow)

    # Repeats are interleaved across all steps and the best repeat is kept: on a shared machine a burst
    # of foreign load then hits both Opus backends alike instead of whichever ran during it.
    task = ctx.task("µs per 20 ms frame", total=len(steps) * repeats)
    for step in steps.values():
        step(0)  # warm up (first-call allocations, lazy imports)
    costs: dict[str, list[float]] = {figure: [] for figure in steps}
    for _ in range(repeats):
        for figure, step in steps.items():
            costs[figure].append(cost_us(step, loops))
            task.advance()
    for figure, samples in costs.items():
        result.figures[figure] = min(samples)
        result.units[figure] = "µs"
        result.lower_is_better.add(figure)
    spread = max(statistics.median(v) / min(v) for v in costs.values())
    result.notes.append(
        f"figures are the best of {repeats} interleaved repeats of {loops} frames; the worst "
        f"median/best spread over all steps was {spread:.2f}x (foreign load on this shared machine)"
    )
    # The concealment steps alternate loss and good frame; report the pair's cost as "per loss".
    for figure in [f for f in result.figures if f.endswith("_conceal_us")]:
        result.figures[figure] *= 2
    result.notes.append(
        "*_conceal_us: one lost 20 ms frame concealed plus the good frame after it (the loss is fresh "
        "every time, so the pitch search runs each time)"
    )

    for figure, target in TARGETS_US.items():
        result.targets[figure] = target
    for backend in backends:
        result.targets[f"opus_{backend}_encode_us"] = TARGET_OPUS_ENCODE_US
        result.targets[f"opus_{backend}_decode_us"] = TARGET_OPUS_DECODE_US

    if set(backends) == {"pyav", "opuslib"}:
        # The encoder is judged on encoding; the decoder on a stream with 3 % loss, because the
        # backends conceal very differently (libopus PLC/FEC vs pitch repetition at 48 kHz).
        for direction, role, suffix in (
            ("encode", "encoder", "encode_us"),
            ("decode", "decoder", "decode_us"),
            ("decode with 3% loss", "decoder", "decode_3pct_loss_us"),
        ):
            pyav_cost = result.figures[f"opus_pyav_{suffix}"]
            opuslib_cost = result.figures[f"opus_opuslib_{suffix}"]
            result.ratios[f"opus {direction} opuslib/pyav"] = opuslib_cost / pyav_cost
            fastest = "pyav" if pyav_cost <= opuslib_cost else "opuslib"
            line = (
                f"Opus {direction}: pyav {pyav_cost:.1f} µs, opuslib {opuslib_cost:.1f} µs per frame; "
                f"faster: {fastest}"
            )
            if suffix != "decode_us":
                chosen = opus.default_backend(role)
                verdict = "agrees" if chosen == fastest else "DISAGREES"
                line += f"; default {role} backend: {chosen} ({verdict})"
            result.notes.append(line)
        result.ratios["opuslib wrapper decode / direct decode"] = (
            result.figures["opuslib_wrapper_decode_us"] / result.figures["opus_opuslib_decode_us"]
        )
    transcode = (
        result.figures["g711_ulaw_decode_us"]
        + result.figures["resample_8k_to_48k_us"]
        + result.figures[f"opus_{opus.default_backend('encoder')}_encode_us"]
        + result.figures[f"opus_{opus.default_backend('decoder')}_decode_us"]
        + result.figures["resample_48k_to_8k_us"]
        + result.figures["g711_ulaw_encode_us"]
    )
    result.figures["opus_pcmu_transcode_both_ways_us"] = transcode
    result.units["opus_pcmu_transcode_both_ways_us"] = "µs"
    result.lower_is_better.add("opus_pcmu_transcode_both_ways_us")
    result.figures["transcoded_calls_per_core"] = FRAME_MS * 1000 / transcode
    result.units["transcoded_calls_per_core"] = "calls"
    result.notes.append(
        "opus_pcmu_transcode_both_ways_us: PCMU→Opus and Opus→PCMU for one 20 ms frame each (decode, "
        "resample, encode) with the default backends; transcoded_calls_per_core = 20 ms / that "
        "(codec work only: no RTP, jitter buffer or event loop)"
    )
    result.notes.append(
        "speech-like input (harmonics + noise); Opus 48 kHz mono 32 kbit/s VBR, complexity 10, voip, "
        "in-band FEC with 10 % expected loss"
    )
    ctx.log(f"transcoded calls per core (codec work only): {result.figures['transcoded_calls_per_core']:.0f}")
    return result


SUITE = Suite(
    name="codecs",
    description="µs per 20 ms frame: G.711, Opus (PyAV vs opuslib), PLC, resampling 48↔8 kHz",
    run=run,
    params={
        "loops": "frames per repeat (default 2000, quick 200)",
        "repeats": "interleaved repeats per figure; the best is kept (default 7, quick 3)",
    },
    packages=("opuslib", "av", "numpy"),
)
