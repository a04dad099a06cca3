"""Pitch-repetition packet-loss concealment (G.711 Appendix I style) and concealment through the codecs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from media.codecs import CodecError, WaveformConcealer, create_decoder, create_encoder, opus

RATE = 8000
FRAME = 160


def vowel(rate: int = RATE, seconds: float = 4.0, f0: float = 120.0) -> np.ndarray:
    """A synthetic vowel: decaying harmonics of a slowly wavering pitch."""
    t = np.arange(int(rate * seconds)) / rate
    pitch = f0 * (1 + 0.02 * np.sin(2 * np.pi * 0.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    signal = sum((0.8**k) * np.sin(k * phase) for k in range(1, 12))
    pcm: np.ndarray = (signal / np.max(np.abs(signal)) * 12000).astype(np.int16)
    return pcm


def energy(pcm: np.ndarray) -> float:
    return float(np.mean(pcm.astype(np.float64) ** 2))


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - test.astype(np.float64)) ** 2)))


def primed(signal: np.ndarray, frames: int = 10) -> WaveformConcealer:
    concealer = WaveformConcealer(RATE)
    for index in range(frames):
        concealer.good_frame(signal[index * FRAME : (index + 1) * FRAME])
    return concealer


def test_pitch_period_is_found() -> None:
    concealer = primed(vowel(f0=100.0))
    concealer.conceal(FRAME)
    assert concealer.period == pytest.approx(80, abs=2)


def test_concealment_is_continuous_at_both_edges() -> None:
    signal = vowel()
    # The largest step the vowel itself takes between samples, with a margin.
    natural_step = np.max(np.abs(np.diff(signal.astype(np.int32)))) * 1.1
    concealer = primed(signal)
    lost = np.concatenate([concealer.conceal(FRAME), concealer.conceal(FRAME)])
    back = concealer.good_frame(signal[12 * FRAME : 13 * FRAME])
    stream = np.concatenate([signal[9 * FRAME : 10 * FRAME], lost, back]).astype(np.int32)
    assert lost.shape == (2 * FRAME,) and back.shape == (FRAME,)
    assert np.max(np.abs(np.diff(stream))) <= natural_step


def test_good_frames_pass_through_untouched_when_nothing_is_lost() -> None:
    signal = vowel(seconds=0.5)
    concealer = WaveformConcealer(RATE)
    for index in range(signal.shape[0] // FRAME):
        frame = signal[index * FRAME : (index + 1) * FRAME]
        np.testing.assert_array_equal(concealer.good_frame(frame), frame)


def test_energy_decays_over_a_long_loss_then_silence() -> None:
    signal = vowel()
    concealer = primed(signal)
    blocks = [concealer.conceal(80) for _ in range(10)]  # 10 ms each, 100 ms in all
    energies = [energy(block) for block in blocks]
    assert energies[0] == pytest.approx(energy(signal[1520:1600]), rel=0.5)
    assert all(later <= earlier * 1.05 for earlier, later in itertools.pairwise(energies[1:]))
    assert energies[4] < 0.5 * energies[0]
    assert all(e == 0.0 for e in energies[6:])  # silent after 60 ms
    assert concealer.concealing
    # Recovery fades the real signal in from silence: no step.
    back = concealer.good_frame(signal[3000:3160])
    assert abs(int(back[0])) < 500
    assert not concealer.concealing


def test_concealment_beats_silence_insertion_at_3_percent_loss() -> None:
    signal = vowel()
    frames = signal.reshape(-1, FRAME)
    lost = np.random.default_rng(7).random(frames.shape[0]) < 0.03
    lost[:3] = False
    assert 3 <= lost.sum() <= 15
    concealer = WaveformConcealer(RATE)
    concealed = np.concatenate(
        [
            concealer.conceal(FRAME) if gone else concealer.good_frame(frame)
            for frame, gone in zip(frames, lost, strict=True)
        ]
    )
    silenced = np.where(np.repeat(lost, FRAME), 0, signal).astype(np.int16)
    assert snr_db(signal, concealed) > snr_db(signal, silenced) + 6.0


def test_concealer_works_at_48_khz() -> None:
    signal = vowel(rate=48000, seconds=0.5, f0=150.0)
    concealer = WaveformConcealer(48000)
    for index in range(10):
        concealer.good_frame(signal[index * 960 : (index + 1) * 960])
    out = concealer.conceal(960)
    assert out.shape == (960,)
    assert concealer.period == pytest.approx(320, abs=4)
    assert snr_db(signal[9600:10560], out) > 5.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="not supported"):
        WaveformConcealer(11025)
    with pytest.raises(CodecError, match="positive"):
        WaveformConcealer(RATE).conceal(0)


def test_concealing_before_any_audio_gives_silence() -> None:
    out = WaveformConcealer(RATE).conceal(FRAME)
    assert out.shape == (FRAME,) and not np.any(out)


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_g711_decoders_conceal_frames_of_the_right_size(name: str) -> None:
    encoder, decoder = create_encoder(name), create_decoder(name)
    signal = vowel(seconds=0.5)
    for index in range(5):
        decoder.decode(encoder.encode(signal[index * FRAME : (index + 1) * FRAME]))
    frame = decoder.conceal()
    assert frame.dtype == np.int16 and frame.shape == (FRAME,)
    assert energy(frame) > 0.2 * energy(signal[:FRAME])
    assert decoder.conceal(80).shape == (80,)
    assert decoder.conceal_with_next(encoder.encode(signal[:FRAME])).shape == (FRAME,)
    assert create_decoder(name, frame_ms=30).conceal().shape == (240,)
    with pytest.raises(CodecError, match="samples to conceal"):
        decoder.conceal(10**6)


@pytest.mark.parametrize("backend", [b for b in opus.BACKENDS if opus.backend_available(b)])
def test_opus_decoders_conceal_frames_of_the_right_size(backend: str) -> None:
    encoder = create_encoder("opus", backend=backend, frame_ms=20)
    decoder = create_decoder("opus", backend=backend, frame_ms=20)
    signal = vowel(rate=48000, seconds=0.2)
    for index in range(5):
        decoder.decode(encoder.encode(signal[index * 960 : (index + 1) * 960]))
    assert decoder.conceal().shape == (960,)
    assert decoder.conceal(480).shape == (480,)
    assert create_decoder("opus", backend=backend, frame_ms=10).conceal().shape == (480,)
    # Uneven counts (timestamp gaps need not be whole frames) and long gaps are honoured exactly.
    assert decoder.conceal(100).shape == (100,)
    assert decoder.conceal(48000).shape == (48000,)
    assert decoder.conceal_with_next(encoder.encode(signal[:960]), 500).shape == (500,)
    with pytest.raises(CodecError, match="samples to conceal"):
        decoder.conceal(48001)
