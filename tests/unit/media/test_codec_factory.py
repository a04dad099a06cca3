"""The codec factory: names and SDP codecs to encoder/decoder objects, clear ValueErrors otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from media.codecs import (
    CodecError,
    CodecSpec,
    Decoder,
    Encoder,
    UnknownCodecError,
    codec_spec,
    create_decoder,
    create_encoder,
    supported_codecs,
)
from signaling.sdp import DEFAULT_CODECS, Codec


@pytest.mark.parametrize(
    ("name", "spec_name", "clock_rate", "sample_rate"),
    [("PCMU", "PCMU", 8000, 8000), ("pcma", "PCMA", 8000, 8000), ("OPUS", "opus", 48000, 48000)],
)
def test_names_are_case_insensitive(name: str, spec_name: str, clock_rate: int, sample_rate: int) -> None:
    encoder, decoder = create_encoder(name), create_decoder(name)
    assert isinstance(encoder, Encoder) and isinstance(decoder, Decoder)
    for codec in (encoder, decoder):
        assert (codec.name, codec.clock_rate, codec.sample_rate, codec.channels) == (
            spec_name,
            clock_rate,
            sample_rate,
            1,
        )
        assert codec.frame_ms == 20
    frame = np.zeros(encoder.samples_per_frame, dtype=np.int16)
    assert decoder.decode(encoder.encode(frame)).dtype == np.int16


def test_specs_match_what_sdp_offers() -> None:
    offered = {codec.name.lower(): codec for codec in DEFAULT_CODECS if codec.is_voice}
    specs = {spec.key: spec for spec in supported_codecs()}
    assert set(specs) == set(offered)
    for key, spec in specs.items():
        assert spec.to_sdp_codec() == offered[key]
        assert codec_spec(offered[key]) is spec


def test_sdp_codecs_build_codecs_and_payload_type_can_be_overridden() -> None:
    answered = Codec("opus", 48000, 2, 111, "minptime=10;useinbandfec=1")
    assert create_decoder(answered).name == "opus"
    assert codec_spec(answered).to_sdp_codec(payload_type=111) == answered
    assert CodecSpec("PCMU", 8000, 1, 0).to_sdp_codec() == Codec("PCMU", 8000, 1, 0, None)


@pytest.mark.parametrize(
    ("codec", "message"),
    [
        ("G729", r"unknown audio codec 'G729' \(supported: opus, PCMU, PCMA\)"),
        ("telephone-event", "'telephone-event' is not an audio codec: RFC 4733 events"),
        ("CN", "not an audio codec"),
        ("", "non-empty string"),
        (Codec("PCMU", 16000), r"unsupported PCMU/16000/1: we implement PCMU/8000/1"),
        (Codec("opus", 48000, 1), r"unsupported opus/48000/1"),
        (Codec("telephone-event", 8000, 1, 101, "0-16"), "not an audio codec"),
    ],
)
def test_unknown_codecs_are_clear_value_errors(codec: str | Codec, message: str) -> None:
    for build in (create_encoder, create_decoder, codec_spec):
        with pytest.raises(UnknownCodecError, match=message) as caught:
            build(codec)
        assert isinstance(caught.value, ValueError)


def test_unknown_options_are_value_errors_naming_the_codec() -> None:
    with pytest.raises(CodecError, match="PCMU: got an unexpected keyword argument 'bitrate'"):
        create_encoder("PCMU", bitrate=64000)
    with pytest.raises(ValueError, match="opus"):
        create_decoder("opus", bitrate=64000)


def test_options_reach_the_codec() -> None:
    assert create_encoder("PCMA", frame_ms=30).samples_per_frame == 240
    assert create_encoder("opus", frame_ms=10).samples_per_frame == 480
    assert create_decoder("opus", backend="opuslib").supports_fec
