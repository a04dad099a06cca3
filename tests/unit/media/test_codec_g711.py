"""G.711 µ-law/A-law: bit-exact against Python's audioop (a C implementation of ITU-T G.711) over every
input, hand vectors from the recommendation's tables, and the encoder/decoder objects."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest

from media.codecs import CodecError, g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # deprecated in 3.11, removed in 3.13: used here only as an independent reference

ALL_SAMPLES = np.arange(65536, dtype=np.uint16).view(np.int16)
ALL_CODES = bytes(range(256))


def test_ulaw_encode_is_bit_exact_for_every_sample() -> None:
    reference = audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2)
    assert g711.ulaw_encode(ALL_SAMPLES) == reference


def test_alaw_encode_is_bit_exact_for_every_sample() -> None:
    reference = audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2)
    assert g711.alaw_encode(ALL_SAMPLES) == reference


def test_ulaw_decode_is_bit_exact_for_every_code() -> None:
    reference = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype=np.int16)
    np.testing.assert_array_equal(g711.ulaw_decode(ALL_CODES), reference)


def test_alaw_decode_is_bit_exact_for_every_code() -> None:
    reference = np.frombuffer(audioop.alaw2lin(ALL_CODES, 2), dtype=np.int16)
    np.testing.assert_array_equal(g711.alaw_decode(ALL_CODES), reference)


@pytest.mark.parametrize(
    ("sample", "ulaw", "alaw"),
    [
        (0, 0xFF, 0xD5),  # µ-law zero is all ones; A-law zero is 0x55 with the sign bit set
        (-1, 0x7E, 0x55),  # µ-law: -1 >> 2 has magnitude 1, the second step; A-law: -0
        (32767, 0x80, 0xAA),  # clipped to the largest code
        (-32768, 0x00, 0x2A),
        (1000, 0xCE, 0xFA),
        (-1000, 0x4E, 0x7A),
    ],
)
def test_hand_vectors(sample: int, ulaw: int, alaw: int) -> None:
    pcm = np.array([sample], dtype=np.int16)
    assert g711.ulaw_encode(pcm) == bytes([ulaw])
    assert g711.alaw_encode(pcm) == bytes([alaw])


@pytest.mark.parametrize(
    ("decode", "code", "value"),
    [
        (g711.ulaw_decode, 0xFF, 0),
        (g711.ulaw_decode, 0x7F, 0),  # µ-law has a negative zero
        (g711.ulaw_decode, 0x80, 32124),
        (g711.ulaw_decode, 0x00, -32124),
        (g711.ulaw_decode, 0xCE, 988),
        (g711.alaw_decode, 0xD5, 8),  # A-law has no zero: the smallest steps are ±8
        (g711.alaw_decode, 0x55, -8),
        (g711.alaw_decode, 0xAA, 32256),
        (g711.alaw_decode, 0x2A, -32256),
        (g711.alaw_decode, 0xFA, 1008),
    ],
)
def test_decode_hand_vectors(decode: Callable[[bytes], np.ndarray], code: int, value: int) -> None:
    assert decode(bytes([code])).tolist() == [value]


def test_round_trip_error_is_within_the_quantisation_step() -> None:
    pcm = (np.sin(np.linspace(0, 40 * np.pi, 1600)) * 20000).astype(np.int16)
    for encode, decode in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        error = np.abs(decode(encode(pcm)).astype(np.int32) - pcm)
        # Companding: the step grows with the magnitude, about 1/16 of it at most.
        assert np.all(error <= np.abs(pcm.astype(np.int32)) // 16 + 16)


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_objects_encode_and_decode_frames(name: str) -> None:
    encoder = g711.pcmu_encoder() if name == "PCMU" else g711.pcma_encoder()
    decoder = g711.pcmu_decoder() if name == "PCMU" else g711.pcma_decoder()
    assert (encoder.name, encoder.clock_rate, encoder.sample_rate, encoder.channels) == (name, 8000, 8000, 1)
    assert (decoder.frame_ms, decoder.samples_per_frame, decoder.timestamp_increment) == (20, 160, 160)
    pcm = (np.arange(160, dtype=np.int16) - 80) * 300
    payload = encoder.encode(pcm)
    assert len(payload) == 160
    decoded = decoder.decode(payload)
    assert decoded.dtype == np.int16 and decoded.shape == (160,)
    table = g711.ULAW_DECODE_TABLE if name == "PCMU" else g711.ALAW_DECODE_TABLE
    np.testing.assert_array_equal(decoded, table[np.frombuffer(payload, np.uint8)])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros(160, dtype=np.float32), "int16"),
        (np.zeros((2, 160), dtype=np.int16), "mono"),
        ([0] * 160, "numpy array"),
    ],
)
def test_encoder_rejects_bad_frames(bad: object, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        g711.pcmu_encoder().encode(bad)  # type: ignore[arg-type]


def test_decoder_rejects_bad_payloads() -> None:
    decoder = g711.pcma_decoder()
    with pytest.raises(CodecError, match="empty"):
        decoder.decode(b"")
    with pytest.raises(CodecError, match="bytes"):
        decoder.decode("abc")  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="exceeds"):
        decoder.decode(b"\x00" * 70_000)


def test_bad_frame_length_is_refused() -> None:
    with pytest.raises(ValueError, match="frame length"):
        g711.pcmu_encoder(frame_ms=25)
