"""The codec interface every audio codec implements, and the description used in SDP offer/answer.

Audio frames are mono ``numpy.int16`` arrays at the codec's ``sample_rate``; payloads are the bytes
carried in one RTP packet. Codecs are plain objects: no asyncio, no clock reads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from signaling.sdp import Codec

Pcm = npt.NDArray[np.int16]

# One RTP payload never legitimately exceeds a UDP datagram; refusing more bounds every allocation.
MAX_PAYLOAD_BYTES = 65_535
# Longest stretch a caller may ask to be concealed in one call (bounds the allocation).
MAX_CONCEAL_MS = 1_000


class CodecError(ValueError):
    """A payload or frame the codec cannot handle (bad input, never a codec bug)."""


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """A codec as SDP names it: ``name``/``clock_rate``/``channels`` of the rtpmap, a default payload type
    (``None`` for dynamic types), and the fmtp parameters we offer."""

    name: str
    clock_rate: int
    channels: int = 1
    payload_type: int | None = None
    fmtp: str | None = None

    @property
    def key(self) -> str:
        """The factory key: the encoding name, case-insensitive as in SDP."""
        return self.name.lower()

    def to_sdp_codec(self, payload_type: int | None = None) -> Codec:
        """The ``signaling.sdp.Codec`` to put in an offer (``payload_type`` overrides the default)."""
        from signaling.sdp import Codec

        chosen = self.payload_type if payload_type is None else payload_type
        return Codec(self.name, self.clock_rate, self.channels, chosen, self.fmtp)


def check_pcm(pcm: object, *, expected_samples: int | None = None) -> Pcm:
    """``pcm`` as a 1-D int16 array, or a :class:`CodecError` saying what is wrong with it."""
    if not isinstance(pcm, np.ndarray):
        raise CodecError(f"audio frame must be a numpy array, got {type(pcm).__name__}")
    if pcm.dtype != np.int16:
        raise CodecError(f"audio frame must be int16, got {pcm.dtype}")
    if pcm.ndim != 1:
        raise CodecError(f"audio frame must be mono (1-D), got shape {pcm.shape}")
    if expected_samples is not None and pcm.shape[0] != expected_samples:
        raise CodecError(f"audio frame must hold {expected_samples} samples, got {pcm.shape[0]}")
    return pcm


def check_payload(payload: object) -> bytes:
    """``payload`` as bytes of a sane size, or a :class:`CodecError`."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise CodecError(f"payload must be bytes, got {type(payload).__name__}")
    data = bytes(payload)
    if not data:
        raise CodecError("payload is empty")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise CodecError(f"payload of {len(data)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    return data


class _CodecBase(ABC):
    """Properties shared by encoders and decoders."""

    spec: CodecSpec
    sample_rate: int
    frame_ms: int

    @property
    def name(self) -> str:
        """The payload (encoding) name as in SDP, e.g. ``"PCMU"``."""
        return self.spec.name

    @property
    def clock_rate(self) -> int:
        """The RTP timestamp rate (may differ from ``sample_rate`` when a codec resamples internally)."""
        return self.spec.clock_rate

    @property
    def channels(self) -> int:
        """Channels of the PCM frames this object takes or gives (always mono here)."""
        return 1

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate * self.frame_ms // 1000

    @property
    def timestamp_increment(self) -> int:
        """RTP timestamp advance per frame."""
        return self.clock_rate * self.frame_ms // 1000


class Encoder(_CodecBase):
    """PCM frame → one RTP payload."""

    @abstractmethod
    def encode(self, pcm: Pcm) -> bytes:
        """Encode one mono int16 frame; raises :class:`CodecError` for a frame the codec cannot take."""


class Decoder(_CodecBase):
    """RTP payload → PCM, plus packet-loss concealment for payloads that never arrived."""

    @abstractmethod
    def decode(self, payload: bytes) -> Pcm:
        """Decode one payload; raises :class:`CodecError` for a malformed payload."""

    @abstractmethod
    def conceal(self, samples: int | None = None) -> Pcm:
        """Audio standing in for ``samples`` lost samples (default: one frame)."""

    @property
    def supports_fec(self) -> bool:
        """Whether :meth:`conceal_with_next` can recover audio from the next packet's redundancy."""
        return False

    def has_fec(self, next_payload: bytes) -> bool:
        """Whether :meth:`conceal_with_next` would rebuild the lost frame from ``next_payload`` (it
        carries in-band FEC this decoder can use) rather than fall back to :meth:`conceal`."""
        return False

    def conceal_with_next(self, next_payload: bytes, samples: int | None = None) -> Pcm:
        """Conceal a lost frame when the packet after it is at hand: codecs with in-band FEC (Opus)
        rebuild the lost audio from it; others fall back to :meth:`conceal`. ``next_payload`` must still
        be passed to :meth:`decode` afterwards."""
        return self.conceal(samples)

    def _conceal_length(self, samples: int | None) -> int:
        count = self.samples_per_frame if samples is None else samples
        if isinstance(count, bool) or not isinstance(count, int | np.integer):
            raise CodecError(f"samples to conceal must be an int, got {type(count).__name__}")
        limit = self.sample_rate * MAX_CONCEAL_MS // 1000
        if not 0 < count <= limit:
            raise CodecError(f"samples to conceal must be in 1..{limit}, got {count}")
        return int(count)
