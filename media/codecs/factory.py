"""Encoders and decoders by encoding name (as in SDP rtpmap, case-insensitive), and the codec list
offer/answer can advertise.

``create_encoder("PCMU")``, ``create_decoder(sdp_codec)`` — an ``signaling.sdp.Codec`` (or anything with
``name``, ``clock_rate`` and ``channels``) is checked against what we implement, so ``PCMU/16000`` is
refused rather than played at the wrong speed. ``create_encoder(name, fmtp=...)`` applies what the
receiver's ``a=fmtp`` asks of the encoder (Opus: in-band FEC, bitrate cap); explicit options win.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from media.codecs import g711, opus
from media.codecs.base import CodecError, CodecSpec, Decoder, Encoder


class UnknownCodecError(ValueError):
    """An encoding name or rtpmap we have no codec for."""


class CodecDescription(Protocol):
    """What the factory reads from an SDP codec (``signaling.sdp.Codec`` has it)."""

    @property
    def name(self) -> str: ...

    @property
    def clock_rate(self) -> int: ...

    @property
    def channels(self) -> int: ...


# Names SDP carries that are not audio codecs, each with where they are handled instead.
NOT_AUDIO_CODECS = {
    "telephone-event": "RFC 4733 events are handled by the DTMF path, not decoded as audio",
    "cn": "comfort noise is not supported as a codec",
    "red": "RED redundancy is not supported as a codec",
    "ulpfec": "FEC streams are not audio codecs",
    "flexfec-03": "FEC streams are not audio codecs",
    "rtx": "retransmission streams are not audio codecs",
}


_ENCODERS: dict[str, Callable[..., Encoder]] = {
    "pcmu": g711.pcmu_encoder,
    "pcma": g711.pcma_encoder,
    "opus": opus.create_opus_encoder,
}
_DECODERS: dict[str, Callable[..., Decoder]] = {
    "pcmu": g711.pcmu_decoder,
    "pcma": g711.pcma_decoder,
    "opus": opus.create_opus_decoder,
}
# Encoder options a receiver's fmtp implies, per codec (G.711 has no parameters).
_FMTP_ENCODER_OPTIONS: dict[str, Callable[[str], Mapping[str, Any]]] = {
    "opus": opus.encoder_options_from_fmtp,
}
_SPECS: dict[str, CodecSpec] = {spec.key: spec for spec in (opus.OPUS_SPEC, g711.PCMU_SPEC, g711.PCMA_SPEC)}


def supported_codecs() -> tuple[CodecSpec, ...]:
    """Audio codecs we can encode and decode, in our preference order (Opus first)."""
    return tuple(_SPECS.values())


def codec_spec(codec: str | CodecDescription) -> CodecSpec:
    """Our :class:`CodecSpec` for an encoding name or an SDP codec; :class:`UnknownCodecError` when
    we have none (the message says why)."""
    if isinstance(codec, str):
        name = codec
        described: CodecDescription | None = None
    else:
        name = getattr(codec, "name", None)  # type: ignore[assignment]
        described = codec
    if not isinstance(name, str) or not name:
        raise UnknownCodecError(f"codec name must be a non-empty string, got {name!r}")
    key = name.lower()
    if key in NOT_AUDIO_CODECS:
        raise UnknownCodecError(f"{name!r} is not an audio codec: {NOT_AUDIO_CODECS[key]}")
    spec = _SPECS.get(key)
    if spec is None:
        known = ", ".join(s.name for s in _SPECS.values())
        raise UnknownCodecError(f"unknown audio codec {name!r} (supported: {known})")
    if described is not None:
        rate, channels = described.clock_rate, described.channels
        if rate != spec.clock_rate or channels != spec.channels:
            raise UnknownCodecError(
                f"unsupported {name}/{rate}/{channels}: we implement "
                f"{spec.name}/{spec.clock_rate}/{spec.channels}"
            )
    return spec


def create_encoder(codec: str | CodecDescription, *, fmtp: str | None = None, **options: Any) -> Encoder:
    """An encoder for ``codec``; ``options`` go to the codec (``frame_ms``; for Opus also ``backend``,
    ``bitrate``, ``application``, ``fec``, ``packet_loss_percent``, ``complexity``). ``fmtp``: the
    receiver's format parameters (``""`` when its SDP had none), turned into options beneath ``options``;
    ``None`` keeps the codec's defaults."""
    spec = codec_spec(codec)
    from_fmtp = _FMTP_ENCODER_OPTIONS.get(spec.key)
    if fmtp is not None and from_fmtp is not None:
        options = {**from_fmtp(fmtp), **options}
    encoder: Encoder = _build(_ENCODERS[spec.key], spec, options)
    return encoder


def create_decoder(codec: str | CodecDescription, **options: Any) -> Decoder:
    """A decoder for ``codec``; ``options``: ``frame_ms``, and ``backend`` for Opus."""
    spec = codec_spec(codec)
    decoder: Decoder = _build(_DECODERS[spec.key], spec, options)
    return decoder


def _build(factory: Callable[..., Any], spec: CodecSpec, options: dict[str, Any]) -> Any:
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as exc:
        raise CodecError(f"{spec.name}: {exc}") from None
    return factory(**options)
