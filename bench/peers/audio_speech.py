"""Reference speech, offline codec chains and PESQ scoring for ``bench/suites/audio_quality.py``.

Reference: a few Harvard sentences spoken by espeak-ng (Debian package), each converted by sox to mono
16-bit at the wanted rate, joined with 0.6 s pauses and padded with 0.5 s of silence at both ends (PESQ
wants speech with pauses, 40-80 % active). The active speech is set to -26 dBov (the ITU-T P.56 level
PESQ test material uses), computed here with a simple energy threshold rather than full P.56.

Scoring: the degraded signal is first aligned on the reference by the peak of their cross-correlation
(only the overall delay: the network path, jitter buffer and resampler delays add up to tens of ms) and
cut to the reference's length; PESQ (ITU-T P.862 through the ``pesq`` package, P.862.1 MOS-LQO for
narrowband at 8 kHz, P.862.2 for wideband at 16 kHz) then does its own fine, per-utterance alignment.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from media.codecs import Resampler, create_decoder, create_encoder
from media.codecs.base import Pcm

SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
)
QUICK_SENTENCES = 3  # about 6 s of audio with pauses: enough for PESQ, half the full run's time
PAUSE_S = 0.6
PAD_S = 0.5
SPEECH_LEVEL_DBOV = -26.0
FRAME_MS = 20


class SpeechError(RuntimeError):
    """The reference speech could not be made (espeak-ng or sox missing or failing)."""


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SpeechError(f"{tool} is not installed (Debian package {package})")
    return path


def _read_wav(path: Path) -> Pcm:
    with wave.open(str(path), "rb") as handle:
        if handle.getnchannels() != 1 or handle.getsampwidth() != 2:
            raise SpeechError(f"{path} is not mono 16-bit")
        data = handle.readframes(handle.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def write_wav(path: Path, pcm: Pcm, rate: int) -> None:
    """Keep a signal for listening (mono 16-bit)."""
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(pcm.astype("<i2").tobytes())


def speak(text: str, rate: int, workdir: Path, name: str) -> Pcm:
    """``text`` spoken by espeak-ng (en-us, 150 words/min), converted by sox to mono 16-bit at ``rate``
    (without dither: deterministic)."""
    espeak = _require("espeak-ng", "espeak-ng")
    sox = _require("sox", "sox")
    raw = workdir / f"{name}-espeak.wav"
    converted = workdir / f"{name}-{rate}.wav"
    for command in (
        [espeak, "-v", "en-us", "-s", "150", "-w", str(raw), text],
        # -D: no dither, so the reference (and every figure) is the same from run to run.
        [sox, "-D", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(converted)],
    ):
        completed = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if completed.returncode != 0:
            raise SpeechError(f"{Path(command[0]).name} failed: {completed.stderr.strip()[:300]}")
    return _read_wav(converted)


def set_speech_level(pcm: Pcm, rate: int, dbov: float = SPEECH_LEVEL_DBOV) -> Pcm:
    """Scale so the active speech (10 ms blocks within 30 dB of the loudest) is at ``dbov`` RMS."""
    samples = pcm.astype(np.float64)
    block = rate // 100
    usable = samples[: samples.shape[0] - samples.shape[0] % block].reshape(-1, block)
    energies = np.mean(usable * usable, axis=1)
    if not np.any(energies > 0):
        raise SpeechError("the reference speech is silent")
    active = energies[energies > np.max(energies) * 10 ** (-30 / 10)]
    rms = float(np.sqrt(np.mean(active)))
    wanted = 32768.0 * 10 ** (dbov / 20)
    return np.clip(np.rint(samples * wanted / rms), -32768, 32767).astype(np.int16)


def reference_speech(rate: int, workdir: Path, *, sentences: int = len(SENTENCES)) -> Pcm:
    """The reference signal at ``rate``: sentences with pauses, padded, at -26 dBov, a whole number of
    20 ms frames long."""
    pause = np.zeros(int(PAUSE_S * rate), dtype=np.int16)
    pad = np.zeros(int(PAD_S * rate), dtype=np.int16)
    parts: list[Pcm] = [pad]
    for index, text in enumerate(SENTENCES[:sentences]):
        if index:
            parts.append(pause)
        parts.append(_trim_silence(speak(text, rate, workdir, f"s{index}")))
    parts.append(pad)
    signal = set_speech_level(np.concatenate(parts), rate)
    frame = rate * FRAME_MS // 1000
    extra = -signal.shape[0] % frame
    return np.concatenate((signal, np.zeros(extra, dtype=np.int16)))


def _trim_silence(pcm: Pcm, threshold: int = 64) -> Pcm:
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > threshold)
    return pcm if loud.shape[0] == 0 else pcm[loud[0] : loud[-1] + 1]


def frames(pcm: Pcm, rate: int) -> list[Pcm]:
    size = rate * FRAME_MS // 1000
    return [pcm[i : i + size] for i in range(0, pcm.shape[0] - size + 1, size)]


def resample_stream(pcm: Pcm, rate_in: int, rate_out: int) -> Pcm:
    """A whole signal through the media plane's streaming resampler, 20 ms at a time."""
    if rate_in == rate_out:
        return pcm.copy()
    resampler = Resampler(rate_in, rate_out)
    return np.concatenate([resampler.process(f) for f in frames(pcm, rate_in)])


def codec_round_trip(pcm: Pcm, rate: int, codec: str) -> Pcm:
    """``pcm`` (at ``rate``) encoded and decoded by ``codec`` frame by frame, no network; resampled to the
    codec's rate and back when they differ (the resampling is part of any narrowband Opus chain)."""
    encoder = create_encoder(codec)
    decoder = create_decoder(codec)
    signal = resample_stream(pcm, rate, encoder.sample_rate)
    decoded = np.concatenate([decoder.decode(encoder.encode(f)) for f in frames(signal, encoder.sample_rate)])
    return resample_stream(decoded, decoder.sample_rate, rate)


def tandem_opus_pcmu(pcm8k: Pcm) -> Pcm:
    """What Opus → PCMU transcoding does to audio without a network: 8 kHz speech up to 48 kHz, Opus,
    back down to 8 kHz, then G.711 µ-law."""
    return codec_round_trip(codec_round_trip(pcm8k, 8000, "opus"), 8000, "PCMU")


def align(reference: Pcm, degraded: Pcm) -> tuple[Pcm, int]:
    """``degraded`` shifted by its delay behind ``reference`` (cross-correlation peak, delays >= 0 only)
    and cut or zero-padded to the reference's length; returns it with the delay in samples."""
    ref = reference.astype(np.float64)
    deg = degraded.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(ref.shape[0] + deg.shape[0])))
    correlation = np.fft.irfft(np.fft.rfft(deg, size) * np.conj(np.fft.rfft(ref, size)), size)
    delay = int(np.argmax(correlation[: deg.shape[0]]))
    shifted = degraded[delay : delay + reference.shape[0]]
    if shifted.shape[0] < reference.shape[0]:
        shifted = np.concatenate((shifted, np.zeros(reference.shape[0] - shifted.shape[0], dtype=np.int16)))
    return shifted.astype(np.int16), delay


def pesq_score(reference: Pcm, degraded: Pcm, rate: int) -> float:
    """PESQ MOS-LQO of ``degraded`` against ``reference`` (narrowband at 8 kHz, wideband at 16 kHz)."""
    from pesq import pesq

    mode = {8000: "nb", 16000: "wb"}.get(rate)
    if mode is None:
        raise ValueError(f"PESQ needs 8 or 16 kHz audio, got {rate} Hz")
    aligned, _ = align(reference, degraded)
    ref: npt.NDArray[np.float64] = reference.astype(np.float64)
    return float(pesq(rate, ref, aligned.astype(np.float64), mode))
