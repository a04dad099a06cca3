"""Opus through both backends: a tone keeps its frequency, frames and concealment have the right size,
FEC recovers a lost frame (opuslib), bad input is a CodecError, the default backend choice."""

from __future__ import annotations

import numpy as np
import pytest

from media.codecs import CodecError, Encoder, opus

BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(not opus.backend_available(name), reason=f"{name} missing"))
    for name in opus.BACKENDS
]
RATE = 48000
FRAME = 960


def tone(frequency: float, seconds: float, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def peak_frequency(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.shape[0])))
    return float(np.argmax(spectrum)) * RATE / int(pcm.shape[0])


def encode_all(encoder: Encoder, pcm: np.ndarray) -> list[bytes]:
    return [encoder.encode(pcm[i : i + FRAME]) for i in range(0, pcm.shape[0] - FRAME + 1, FRAME)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("frequency", [440.0, 1000.0, 2500.0])
def test_tone_round_trip_keeps_frequency_and_level(backend: str, frequency: float) -> None:
    encoder = opus.create_opus_encoder(backend)
    decoder = opus.create_opus_decoder(backend)
    packets = encode_all(encoder, tone(frequency, 1.0))
    assert all(0 < len(packet) <= opus.MAX_PACKET_BYTES for packet in packets)
    decoded = np.concatenate([decoder.decode(packet) for packet in packets])
    assert decoded.dtype == np.int16 and decoded.shape == (RATE,)
    steady = decoded[RATE // 10 :]
    assert peak_frequency(steady) == pytest.approx(frequency, rel=0.02)
    rms = np.sqrt(np.mean(steady.astype(np.float64) ** 2))
    assert rms == pytest.approx(8000 / np.sqrt(2), rel=0.25)


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_backends_decode_each_others_packets(backend: str) -> None:
    other = "opuslib" if backend == "pyav" else "pyav"
    if not opus.backend_available(other):
        pytest.skip(f"{other} missing")
    packets = encode_all(opus.create_opus_encoder(backend), tone(1000.0, 0.5))
    decoder = opus.create_opus_decoder(other)
    decoded = np.concatenate([decoder.decode(packet) for packet in packets])
    assert peak_frequency(decoded[4800:]) == pytest.approx(1000.0, rel=0.02)


@pytest.mark.parametrize("backend", BACKENDS)
def test_concealment_gives_frames_of_the_asked_size(backend: str) -> None:
    decoder = opus.create_opus_decoder(backend)
    packets = encode_all(opus.create_opus_encoder(backend), tone(300.0, 0.2))
    for packet in packets[:5]:
        decoder.decode(packet)
    concealed = decoder.conceal()
    assert concealed.dtype == np.int16 and concealed.shape == (FRAME,)
    # A just-lost frame continues the tone rather than going silent.
    assert np.sqrt(np.mean(concealed.astype(np.float64) ** 2)) > 1000
    assert decoder.conceal(480).shape == (480,)
    assert decoder.decode(packets[5]).shape == (FRAME,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_is_a_codec_error(backend: str) -> None:
    encoder = opus.create_opus_encoder(backend)
    decoder = opus.create_opus_decoder(backend)
    with pytest.raises(CodecError, match="960 samples"):
        encoder.encode(np.zeros(961, dtype=np.int16))
    with pytest.raises(CodecError, match="int16"):
        encoder.encode(np.zeros(FRAME, dtype=np.float64))
    with pytest.raises(CodecError, match="empty"):
        decoder.decode(b"")
    with pytest.raises(CodecError, match="cannot be decoded"):
        decoder.decode(b"\xff\xff\xff")  # code 3 TOC with an impossible frame count
    with pytest.raises(CodecError, match="samples to conceal"):
        decoder.conceal(0)
    # The decoder survives bad input.
    packet = opus.create_opus_encoder(backend).encode(tone(1000.0, 0.02))
    assert decoder.decode(packet).shape == (FRAME,)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bitrate": 100}, "bitrate"),
        ({"application": "music"}, "application"),
        ({"packet_loss_percent": 101}, "packet loss"),
        ({"complexity": 11}, "complexity"),
        ({"frame_ms": 25}, "frame length"),
    ],
)
def test_bad_encoder_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(CodecError, match=message):
        opus.create_opus_encoder(**options)  # type: ignore[arg-type]


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(CodecError, match="unknown Opus backend 'ffmpeg'"):
        opus.create_opus_decoder("ffmpeg")
    with pytest.raises(CodecError, match="role"):
        opus.default_backend("mixer")


def test_default_backends_follow_the_benchmark_order() -> None:
    available = opus.available_backends()
    assert available, "no Opus backend at all"
    for role in ("encoder", "decoder"):
        expected = next(name for name in opus.PREFERRED_BACKENDS[role] if name in available)
        assert opus.default_backend(role) == expected
    assert opus.create_opus_encoder().backend == opus.default_backend("encoder")  # type: ignore[attr-defined]
    assert opus.create_opus_decoder().backend == opus.default_backend("decoder")  # type: ignore[attr-defined]


@pytest.mark.skipif(not opus.backend_available("opuslib"), reason="opuslib missing")
def test_opuslib_fec_rebuilds_a_lost_frame_better_than_plc() -> None:
    signal = tone(700.0, 1.0) + tone(1300.0, 1.0, 3000.0)
    encoder = opus.create_opus_encoder("opuslib", fec=True, packet_loss_percent=20, bitrate=48_000)
    packets = encode_all(encoder, signal)
    lost = 25

    def decode_losing(use_fec: bool) -> np.ndarray:
        decoder = opus.create_opus_decoder("opuslib")
        assert decoder.supports_fec
        out = []
        for index, packet in enumerate(packets):
            if index == lost:
                nxt = packets[index + 1]
                out.append(decoder.conceal_with_next(nxt) if use_fec else decoder.conceal())
            else:
                out.append(decoder.decode(packet))
        return np.concatenate(out)

    clean_decoder = opus.create_opus_decoder("opuslib")
    reference = np.concatenate([clean_decoder.decode(packet) for packet in packets])
    window = slice(lost * FRAME, (lost + 1) * FRAME)

    def error(decoded: np.ndarray) -> float:
        return float(np.sum((decoded[window].astype(np.float64) - reference[window]) ** 2))

    with pytest.raises(CodecError, match="at most 5760 samples"):
        opus.create_opus_decoder("opuslib").conceal_with_next(packets[1], 5761)
    with_fec, with_plc = decode_losing(True), decode_losing(False)
    assert with_fec.shape == reference.shape
    assert error(with_fec) < 0.3 * error(with_plc)


def test_pyav_decoder_has_no_fec_and_falls_back_to_concealment() -> None:
    if not opus.backend_available("pyav"):
        pytest.skip("pyav missing")
    decoder = opus.create_opus_decoder("pyav")
    assert decoder.supports_fec is False
    packets = encode_all(opus.create_opus_encoder("pyav"), tone(500.0, 0.1))
    for packet in packets[:4]:
        decoder.decode(packet)
    assert decoder.conceal_with_next(packets[4]).shape == (FRAME,)
