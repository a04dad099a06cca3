"""Audio codecs for the media plane: G.711 (PCMU/PCMA), Opus (PyAV or opuslib), resampling, PLC.

Frames are mono ``numpy.int16`` arrays; see ``media.codecs.base`` for the interface.
"""

from media.codecs.base import CodecError, CodecSpec, Decoder, Encoder, Pcm
from media.codecs.factory import (
    UnknownCodecError,
    codec_spec,
    create_decoder,
    create_encoder,
    supported_codecs,
)
from media.codecs.plc import WaveformConcealer
from media.codecs.resample import Resampler, resample

__all__ = [
    "CodecError",
    "CodecSpec",
    "Decoder",
    "Encoder",
    "Pcm",
    "Resampler",
    "UnknownCodecError",
    "WaveformConcealer",
    "codec_spec",
    "create_decoder",
    "create_encoder",
    "resample",
    "supported_codecs",
]
