"""Signal helpers for the audio end-to-end tests: WAV files, tones, speech, dominant frequency, level,
time alignment and PESQ (ITU-T P.862 through the ``pesq`` package).

Everything works on mono int16 numpy arrays; files are 16-bit PCM WAV (what baresip's ``aufile`` reads
and ``sndfile`` writes).
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]


def write_wav(path: Path, samples: Samples, rate: int) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())
    return path


def read_wav(path: Path) -> tuple[Samples, int]:
    """Mono int16 samples and the rate of a 16-bit WAV (a stereo file is reduced to its first channel)."""
    with wave.open(str(path), "rb") as source:
        if source.getsampwidth() != 2:
            raise ValueError(f"{path}: {source.getsampwidth() * 8}-bit WAV, expected 16-bit")
        channels, rate = source.getnchannels(), source.getframerate()
        data = np.frombuffer(source.readframes(source.getnframes()), dtype="<i2")
    return data.reshape(-1, channels)[:, 0].astype(np.int16), rate


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> Samples:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def speech(path: Path, text: str, rate: int, workdir: Path) -> Samples:
    """``text`` spoken by espeak-ng, resampled to ``rate`` by sox, written to ``path`` and returned."""
    raw = workdir / f"{path.stem}-espeak.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(raw), text], check=True, timeout=60)
    subprocess.run(
        ["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path)], check=True, timeout=60
    )
    samples, actual = read_wav(path)
    assert actual == rate, (path, actual)
    return samples


def rms(samples: Samples) -> float:
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def dominant_frequency(samples: Samples, rate: int) -> float:
    """The frequency (Hz) of the strongest FFT bin (DC excluded) of a Hann-windowed signal."""
    if samples.size < 256:
        raise ValueError(f"{samples.size} samples are too few for a spectrum")
    windowed = samples.astype(np.float64) * np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(windowed))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * rate / samples.size)


def band_energy_fraction(samples: Samples, rate: int, frequency: float, width: float = 50.0) -> float:
    """Share of the signal's spectral energy within ``frequency ± width`` Hz (1.0 = a pure tone)."""
    windowed = samples.astype(np.float64) * np.hanning(samples.size)
    power = np.abs(np.fft.rfft(windowed)) ** 2
    power[0] = 0.0
    freqs = np.fft.rfftfreq(samples.size, 1 / rate)
    total = float(power.sum())
    if total == 0.0:
        return 0.0
    return float(power[np.abs(freqs - frequency) <= width].sum() / total)


def active_span(samples: Samples, rate: int, floor: float, window_ms: int = 20) -> Samples:
    """The samples from the first to the last window whose RMS exceeds ``floor`` (silence trimmed)."""
    size = rate * window_ms // 1000
    windows = samples[: samples.size // size * size].reshape(-1, size).astype(np.float64)
    loud = np.flatnonzero(np.sqrt(np.mean(windows**2, axis=1)) > floor)
    if loud.size == 0:
        return samples[:0]
    return samples[loud[0] * size : (loud[-1] + 1) * size]


def resample(samples: Samples, rate: int, target: int) -> Samples:
    """Band-limited resampling through the FFT (enough for test signals; any ratio)."""
    if rate == target:
        return samples
    count = round(samples.size * target / rate)
    spectrum = np.fft.rfft(samples.astype(np.float64))
    keep = min(spectrum.size, count // 2 + 1)
    out = np.fft.irfft(spectrum[:keep], n=count) * (count / samples.size)
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def align(reference: Samples, degraded: Samples, max_lag: int) -> tuple[Samples, Samples, int]:
    """Both signals cut to their overlap after shifting ``degraded`` by the lag (samples, ≤ ``max_lag``)
    that maximises their cross-correlation; returns (reference, degraded, lag)."""
    ref = reference.astype(np.float64)
    deg = degraded.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(ref.size + deg.size)))
    correlation = np.fft.irfft(np.fft.rfft(deg, size) * np.conj(np.fft.rfft(ref, size)), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    best = int(lags[np.argmax(correlation[lags])])
    if best >= 0:
        deg_cut, ref_cut = degraded[best:], reference
    else:
        deg_cut, ref_cut = degraded, reference[-best:]
    length = min(deg_cut.size, ref_cut.size)
    return ref_cut[:length], deg_cut[:length], best


def pesq_nb(reference: Samples, degraded: Samples) -> float:
    """Narrowband PESQ (MOS-LQO) of two time-aligned 8 kHz signals."""
    from pesq import pesq

    return float(pesq(8000, reference.astype(np.float32), degraded.astype(np.float32), "nb"))
