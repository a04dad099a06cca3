"""Streaming polyphase resampler: frequency and level kept, aliasing suppressed, frames join exactly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from media.codecs import CodecError, Resampler, resample
from media.codecs.resample import design_filter

PAIRS = [(48000, 8000), (8000, 48000), (16000, 8000), (8000, 16000), (48000, 16000), (16000, 48000)]


def tone(rate: int, frequency: float, seconds: float = 1.0, amplitude: float = 10000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def frames(pcm: np.ndarray, rate: int, ms: int = 20) -> list[np.ndarray]:
    size = rate * ms // 1000
    return [pcm[i : i + size] for i in range(0, pcm.shape[0], size)]


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


def peak_frequency(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.shape[0])))
    return float(np.argmax(spectrum)) * rate / int(pcm.shape[0])


@pytest.mark.parametrize(("rate_in", "rate_out"), PAIRS)
def test_1khz_tone_keeps_frequency_and_amplitude(rate_in: int, rate_out: int) -> None:
    resampler = Resampler(rate_in, rate_out)
    out = np.concatenate([resampler.process(frame) for frame in frames(tone(rate_in, 1000.0), rate_in)])
    assert out.dtype == np.int16 and out.shape == (rate_out,)  # 20 ms in, exactly 20 ms out
    steady = out[int(resampler.delay) + rate_out // 10 :]
    assert peak_frequency(steady, rate_out) == pytest.approx(1000.0, abs=rate_out / steady.shape[0] + 1)
    assert rms(steady) == pytest.approx(10000.0 / np.sqrt(2), rel=0.01)


@pytest.mark.parametrize("frequency", [4600.0, 6000.0, 9000.0, 15000.0])
def test_48k_to_8k_suppresses_aliasing_by_40_db(frequency: float) -> None:
    # Without the low-pass these tones fold back into 0-4 kHz at full level.
    out = resample(tone(48000, frequency), 48000, 8000)
    steady = out[out.shape[0] // 4 :]
    reference = rms(tone(8000, 1000.0)[2000:])
    attenuation_db = 20 * np.log10(reference / max(rms(steady), 1e-3))
    assert attenuation_db >= 40.0


def test_telephone_band_survives_48k_to_8k() -> None:
    out = resample(tone(48000, 3300.0), 48000, 8000)
    assert rms(out[2000:]) == pytest.approx(10000.0 / np.sqrt(2), rel=0.05)


@pytest.mark.parametrize(("rate_in", "rate_out"), PAIRS)
def test_frame_by_frame_output_equals_whole_signal_output(rate_in: int, rate_out: int) -> None:
    rng = np.random.default_rng(5)
    signal = (tone(rate_in, 440.0, 0.5) + rng.normal(0, 2000, rate_in // 2)).astype(np.int16)
    whole = Resampler(rate_in, rate_out).process(signal)
    streaming = Resampler(rate_in, rate_out)
    pieces = [streaming.process(frame) for frame in frames(signal, rate_in)]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)


def test_uneven_frame_sizes_join_the_same_way() -> None:
    signal = tone(48000, 700.0, 0.3)
    whole = Resampler(48000, 8000).process(signal)
    streaming = Resampler(48000, 8000)
    cuts = [0, 7, 480, 481, 2000, 5003, signal.shape[0]]
    pieces = [streaming.process(signal[a:b]) for a, b in itertools.pairwise(cuts)]
    # Output k (every 6th input) comes out as soon as input sample 6k has arrived.
    assert [p.shape[0] for p in pieces][:2] == [2, 78]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)


def test_no_click_at_frame_edges() -> None:
    # A tone converted frame by frame has no sample-to-sample step larger than the tone itself allows.
    resampler = Resampler(8000, 48000)
    out = np.concatenate([resampler.process(f) for f in frames(tone(8000, 1000.0), 8000)])
    steady = out[1000:].astype(np.int32)
    max_slope = 10000 * 2 * np.pi * 1000 / 48000
    assert np.max(np.abs(np.diff(steady))) <= max_slope * 1.02


def test_same_rate_is_a_copy_and_reset_forgets_history() -> None:
    pcm = tone(8000, 500.0, 0.02)
    assert np.array_equal(Resampler(8000, 8000).process(pcm), pcm)
    resampler = Resampler(16000, 8000)
    first = resampler.process(tone(16000, 500.0, 0.02))
    resampler.process(tone(16000, 900.0, 0.02))
    resampler.reset()
    np.testing.assert_array_equal(resampler.process(tone(16000, 500.0, 0.02)), first)


def test_filters_are_designed_once_per_ratio() -> None:
    assert design_filter(48000, 8000) is design_filter(48000, 8000)
    assert Resampler(48000, 8000)._filter is Resampler(48000, 8000)._filter


def test_bad_rates_and_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="44100 Hz is not supported"):
        Resampler(44100, 8000)
    with pytest.raises(CodecError, match="int16"):
        Resampler(8000, 16000).process(np.zeros(160, dtype=np.float32))
    assert Resampler(8000, 16000).process(np.zeros(0, dtype=np.int16)).shape == (0,)
