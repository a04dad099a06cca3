"""G.711 µ-law (PCMU) and A-law (PCMA), bit-exact to ITU-T G.711, through numpy lookup tables.

Encoding indexes a 65,536-entry table with the uint16 view of the int16 samples; decoding indexes a
256-entry table with the payload bytes. The tables are built once at import from the segment rules of the
recommendation (µ-law on the top 14 bits of a sample, A-law on the top 13).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from media.codecs.base import CodecError, CodecSpec, Decoder, Encoder, Pcm, check_payload, check_pcm
from media.codecs.plc import WaveformConcealer

PCMU_SPEC = CodecSpec("PCMU", 8000, 1, 0)
PCMA_SPEC = CodecSpec("PCMA", 8000, 1, 8)

G711_SAMPLE_RATE = 8000
SUPPORTED_FRAME_MS = (10, 20, 30, 40, 50, 60)

_ULAW_BIAS = 0x84 >> 2  # 33, on the 14-bit scale
_ULAW_CLIP = 8159  # largest 14-bit magnitude that still fits after the bias


def _segment(magnitude: npt.NDArray[np.int64], segment_ends: tuple[int, ...]) -> npt.NDArray[np.int64]:
    """Index of the first segment whose end is ≥ magnitude (len(segment_ends) when above all)."""
    return np.searchsorted(np.asarray(segment_ends), magnitude, side="left").astype(np.int64)


def _build_ulaw_encode_table() -> npt.NDArray[np.uint8]:
    linear = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int64) >> 2
    negative = linear < 0
    magnitude = np.minimum(np.where(negative, -linear, linear), _ULAW_CLIP) + _ULAW_BIAS
    segment = _segment(magnitude, (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF))
    code = np.where(segment >= 8, 0x7F, (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F))
    mask = np.where(negative, 0x7F, 0xFF)
    return (code ^ mask).astype(np.uint8)


def _build_ulaw_decode_table() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int64) & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


def _build_alaw_encode_table() -> npt.NDArray[np.uint8]:
    linear = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int64) >> 3
    negative = linear < 0
    # Negative values map to one's complement magnitude (-1 → 0), as the recommendation's tables do.
    magnitude = np.where(negative, -linear - 1, linear)
    segment = _segment(magnitude, (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF))
    shift = np.where(segment < 2, 1, segment)
    code = np.where(segment >= 8, 0x7F, (segment << 4) | ((magnitude >> shift) & 0x0F))
    mask = np.where(negative, 0x55, 0xD5)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_decode_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int64) ^ 0x55
    mantissa = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    magnitude = np.where(segment == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(segment - 1, 0))
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


ULAW_ENCODE_TABLE = _build_ulaw_encode_table()
ULAW_DECODE_TABLE = _build_ulaw_decode_table()
ALAW_ENCODE_TABLE = _build_alaw_encode_table()
ALAW_DECODE_TABLE = _build_alaw_decode_table()


def ulaw_encode(pcm: Pcm) -> bytes:
    return ULAW_ENCODE_TABLE[check_pcm(pcm).view(np.uint16)].tobytes()


def ulaw_decode(payload: bytes) -> Pcm:
    return ULAW_DECODE_TABLE[np.frombuffer(payload, dtype=np.uint8)]


def alaw_encode(pcm: Pcm) -> bytes:
    return ALAW_ENCODE_TABLE[check_pcm(pcm).view(np.uint16)].tobytes()


def alaw_decode(payload: bytes) -> Pcm:
    return ALAW_DECODE_TABLE[np.frombuffer(payload, dtype=np.uint8)]


def _check_frame_ms(frame_ms: int) -> int:
    if frame_ms not in SUPPORTED_FRAME_MS:
        raise CodecError(f"G.711 frame length must be one of {SUPPORTED_FRAME_MS} ms, got {frame_ms!r}")
    return frame_ms


class G711Encoder(Encoder):
    """Encodes frames of any length (``frame_ms`` only sets the RTP timestamp step)."""

    def __init__(self, spec: CodecSpec, table: npt.NDArray[np.uint8], frame_ms: int = 20) -> None:
        self.spec = spec
        self.sample_rate = G711_SAMPLE_RATE
        self.frame_ms = _check_frame_ms(frame_ms)
        self._table = table

    def encode(self, pcm: Pcm) -> bytes:
        return self._table[check_pcm(pcm).view(np.uint16)].tobytes()


class G711Decoder(Decoder):
    """Decodes payloads and conceals lost ones by pitch-period repetition (see ``media.codecs.plc``)."""

    def __init__(self, spec: CodecSpec, table: npt.NDArray[np.int16], frame_ms: int = 20) -> None:
        self.spec = spec
        self.sample_rate = G711_SAMPLE_RATE
        self.frame_ms = _check_frame_ms(frame_ms)
        self._table = table
        self._concealer = WaveformConcealer(G711_SAMPLE_RATE)

    def decode(self, payload: bytes) -> Pcm:
        pcm = self._table[np.frombuffer(check_payload(payload), dtype=np.uint8)]
        return self._concealer.good_frame(pcm)

    def conceal(self, samples: int | None = None) -> Pcm:
        return self._concealer.conceal(self._conceal_length(samples))


def pcmu_encoder(frame_ms: int = 20) -> G711Encoder:
    return G711Encoder(PCMU_SPEC, ULAW_ENCODE_TABLE, frame_ms)


def pcmu_decoder(frame_ms: int = 20) -> G711Decoder:
    return G711Decoder(PCMU_SPEC, ULAW_DECODE_TABLE, frame_ms)


def pcma_encoder(frame_ms: int = 20) -> G711Encoder:
    return G711Encoder(PCMA_SPEC, ALAW_ENCODE_TABLE, frame_ms)


def pcma_decoder(frame_ms: int = 20) -> G711Decoder:
    return G711Decoder(PCMA_SPEC, ALAW_DECODE_TABLE, frame_ms)
