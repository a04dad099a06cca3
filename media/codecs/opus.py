"""Opus (RFC 6716, RTP payload RFC 7587) behind the codec interface, with two interchangeable backends.

* ``pyav`` — PyAV's FFmpeg ``libopus`` wrapper (its wheel bundles a recent libopus). The encoder takes
  bitrate, application, in-band FEC and the expected packet-loss percentage as FFmpeg options, fixed when
  the context opens. FFmpeg's decoder API has no way to ask libopus for PLC or FEC (an empty packet means
  end of stream), so this backend conceals losses with the pitch-repetition concealer of
  ``media.codecs.plc`` at 48 kHz and :attr:`Decoder.supports_fec` is ``False``.
* ``opuslib`` — ctypes over the system libopus (Debian's ``libopus0``, 1.3.1). Full control: native PLC
  (``opus_decode`` with no data) and FEC decoding of the next packet. opuslib's own ``decode``/``encode``
  wrappers copy each sample through Python lists; the hot paths here call the same ctypes functions it
  binds, writing straight into numpy buffers.

:func:`default_backend` picks per role, by ``bench/suites/codecs.py`` on this machine, falling back to
the other backend when one cannot be loaded:

* encoder: ``pyav`` — its newer libopus encodes a 20 ms frame in ~215 µs against ~280 µs for Debian's
  1.3.1 (best of interleaved repeats; single runs on this shared machine vary 1.05-2x);
* decoder: ``opuslib`` — ~32 µs against ~41 µs per frame, ~31 against ~49 µs on a stream with 3 % loss,
  and its concealment is libopus's own PLC/FEC, far better than pitch repetition (FEC rebuilds a lost
  frame from the next packet). Through opuslib's own ``Decoder.decode`` it would be ~67 µs (the
  ~131 µs noted in ARCHITECTURE): the list copy, not the library, made it look slow.

Encoders and decoders are independent streams, so mixing backends on one call is fine.

In-band FEC (LBRR: a coarse copy of the previous frame inside each SILK/hybrid packet) follows what the
receiver declared (RFC 7587 §6.1): :func:`encoder_options_from_fmtp` turns its ``a=fmtp`` into encoder
options — FEC on with ``useinbandfec=1`` (absent means 0: the bits would be wasted), at an expected loss
of :data:`DEFAULT_EXPECTED_LOSS_PERCENT` (libopus codes no LBRR at 0 %), and ``maxaveragebitrate`` as a
bitrate cap.

Frames are mono int16 at 48 kHz; RTP's Opus clock is always 48 kHz and SDP always says
``opus/48000/2`` (RFC 7587), whatever is actually sent.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache
from typing import Any, TypedDict

import numpy as np

from media.codecs.base import CodecError, CodecSpec, Decoder, Encoder, Pcm, check_payload, check_pcm
from media.codecs.plc import WaveformConcealer

OPUS_SPEC = CodecSpec("opus", 48000, 2, None, "minptime=10;useinbandfec=1")
OPUS_SAMPLE_RATE = 48000
SUPPORTED_FRAME_MS = (10, 20, 40, 60)
APPLICATIONS = ("voip", "audio", "lowdelay")
BACKENDS = ("pyav", "opuslib")
# Fastest first, as measured by `python -m bench.cli run codecs` on the dev machine (see module doc).
PREFERRED_BACKENDS = {"encoder": ("pyav", "opuslib"), "decoder": ("opuslib", "pyav")}

DEFAULT_BITRATE = 32_000
# Expected loss for the encoder when FEC is on. libopus needs > 0 to code LBRR at all; higher values spend
# more of the bitrate on it (and favour SILK). Offline on the bench's speech (PyAV's libopus 1.6, 32 kbit/s,
# PESQ via bench/peers/audio_speech.py): 5 % gives 4.13 clean and 3.90 at 3 % random loss with FEC, 10 %
# 4.10 and 3.88, 25 % 3.87 and 3.76; at 10 % loss 5 % and 10 % tie (3.30/3.31). (That libopus codes LBRR
# the same for any 1-5 %.)
DEFAULT_EXPECTED_LOSS_PERCENT = 5
MIN_BITRATE = 6_000
MAX_BITRATE = 510_000
MAX_PACKET_BYTES = 1_500  # one packet in one datagram; also the encoder's output limit
_PLC_GRANULE = 120  # libopus conceals in multiples of 2.5 ms (120 samples at 48 kHz)


def _check_frame_ms(frame_ms: int) -> int:
    if frame_ms not in SUPPORTED_FRAME_MS:
        raise CodecError(f"Opus frame length must be one of {SUPPORTED_FRAME_MS} ms, got {frame_ms!r}")
    return frame_ms


class OpusEncoderOptions(TypedDict, total=False):
    """Keyword options of :func:`create_opus_encoder` that the remote's fmtp decides."""

    fec: bool
    packet_loss_percent: int
    bitrate: int


def _fmtp_parameters(fmtp: str) -> dict[str, str]:
    parameters: dict[str, str] = {}
    for item in fmtp.split(";"):
        key, separator, value = item.partition("=")
        if separator:
            parameters[key.strip().lower()] = value.strip()
    return parameters


def encoder_options_from_fmtp(fmtp: str, *, bitrate: int = DEFAULT_BITRATE) -> OpusEncoderOptions:
    """What the receiver's ``a=fmtp`` for Opus (RFC 7587 §6.1) asks of our encoder: in-band FEC only with
    ``useinbandfec=1`` (then at :data:`DEFAULT_EXPECTED_LOSS_PERCENT` expected loss), and ``bitrate``
    capped by ``maxaveragebitrate``. Unusable values are ignored (the parameters are preferences)."""
    parameters = _fmtp_parameters(fmtp)
    fec = parameters.get("useinbandfec") == "1"
    options: OpusEncoderOptions = {
        "fec": fec,
        "packet_loss_percent": DEFAULT_EXPECTED_LOSS_PERCENT if fec else 0,
    }
    cap = parameters.get("maxaveragebitrate", "")
    if cap.isdigit() and MIN_BITRATE <= int(cap) < bitrate:
        options["bitrate"] = int(cap)
    return options


def _first_frame(packet: bytes) -> tuple[int, int] | None:
    """Offset and length of the first Opus frame of ``packet`` (RFC 6716 §3.2 framing), None when the
    packet is malformed."""
    size = len(packet)
    if size < 1:
        return None
    code = packet[0] & 0x3
    if code == 0:
        return 1, size - 1
    if code == 1:
        return (1, (size - 1) // 2) if (size - 1) % 2 == 0 else None
    if code == 2:
        first = _frame_length(packet, 1)
        if first is None or 1 + first[1] + first[0] > size:
            return None
        return 1 + first[1], first[0]
    if size < 2:
        return None
    count, vbr, padded = packet[1] & 0x3F, bool(packet[1] & 0x80), bool(packet[1] & 0x40)
    if count == 0:
        return None
    offset, padding = 2, 0
    while padded:
        if offset >= size:
            return None
        chunk = packet[offset]
        offset += 1
        padding += 254 if chunk == 255 else chunk
        padded = chunk == 255
    if vbr:
        first = _frame_length(packet, offset)
        if first is None:
            return None
        offset += first[1]
        for _ in range(count - 2):  # the other coded lengths sit before the frames
            other = _frame_length(packet, offset)
            if other is None:
                return None
            offset += other[1]
        length = first[0]
    else:
        length = (size - offset - padding) // count
    if length < 0 or offset + length > size - padding:
        return None
    return offset, length


def _frame_length(packet: bytes, at: int) -> tuple[int, int] | None:
    """A coded frame length at ``at``: (length, bytes it took)."""
    if at >= len(packet):
        return None
    first = packet[at]
    if first < 252:
        return first, 1
    if at + 1 >= len(packet):
        return None
    return first + 4 * packet[at + 1], 2


def packet_has_fec(payload: bytes) -> bool:
    """Whether an Opus packet carries in-band FEC (LBRR) for the audio before it (what libopus ≥ 1.5 calls
    ``opus_packet_has_lbrr``). LBRR lives in the SILK layer: none in CELT-only packets. The SILK layer
    opens with one voice-activity flag per 20 ms SILK frame, then the LBRR flag, each a range-coded
    equiprobable bit — the leading bits of the first frame's first byte (a second set for stereo)."""
    if not payload:
        return False
    config = payload[0] >> 3
    if config >= 16:  # CELT-only
        return False
    # 10/20/40/60 ms for SILK-only configurations, 10/20 ms for hybrid: SILK frames are 20 ms.
    duration_ms = (10, 20, 40, 60)[config % 4] if config < 12 else (10, 20)[config % 2]
    silk_frames = max(1, duration_ms // 20)
    first = _first_frame(payload)
    if first is None or first[1] <= 0:
        return False
    lead = payload[first[0]]
    fec = (lead >> (7 - silk_frames)) & 1
    if payload[0] & 0x4:  # stereo: the side channel's flags follow the mid channel's
        fec |= (lead >> (6 - 2 * silk_frames)) & 1
    return bool(fec)


def _check_encoder_options(bitrate: int, application: str, packet_loss_percent: int, complexity: int) -> None:
    if not MIN_BITRATE <= bitrate <= MAX_BITRATE:
        raise CodecError(f"Opus bitrate must be in {MIN_BITRATE}..{MAX_BITRATE} bit/s, got {bitrate}")
    if application not in APPLICATIONS:
        raise CodecError(f"Opus application must be one of {APPLICATIONS}, got {application!r}")
    if not 0 <= packet_loss_percent <= 100:
        raise CodecError(f"expected packet loss must be 0..100 %, got {packet_loss_percent}")
    if not 0 <= complexity <= 10:
        raise CodecError(f"Opus complexity must be 0..10, got {complexity}")


# --- backend discovery -----------------------------------------------------------------------------


@cache
def backend_available(backend: str) -> bool:
    """Whether ``backend`` can be loaded here (PyAV with libopus; opuslib with a system libopus)."""
    try:
        if backend == "pyav":
            import av

            av.codec.Codec("libopus", "w")
            return True
        if backend == "opuslib":
            import opuslib  # noqa: F401  (raises a bare Exception when libopus is missing)

            return True
    except Exception:  # any failure to load means "not available", never a crash
        return False
    raise CodecError(f"unknown Opus backend {backend!r} (known: {', '.join(BACKENDS)})")


def available_backends() -> tuple[str, ...]:
    return tuple(name for name in BACKENDS if backend_available(name))


def default_backend(role: str = "decoder") -> str:
    """The fastest available backend for ``role`` (``"encoder"`` or ``"decoder"``), per
    ``PREFERRED_BACKENDS`` (set from ``bench/suites/codecs.py``)."""
    order = PREFERRED_BACKENDS.get(role)
    if order is None:
        raise CodecError(f"role must be 'encoder' or 'decoder', got {role!r}")
    for name in order:
        if backend_available(name):
            return name
    raise CodecError("no Opus backend available: install PyAV (`av`) or libopus0 + opuslib")


def _resolve(backend: str | None, role: str) -> str:
    chosen = default_backend(role) if backend is None else backend
    if chosen not in BACKENDS:
        raise CodecError(f"unknown Opus backend {chosen!r} (known: {', '.join(BACKENDS)})")
    if not backend_available(chosen):
        raise CodecError(f"Opus backend {chosen!r} is not available on this machine")
    return chosen


def create_opus_encoder(
    backend: str | None = None,
    *,
    frame_ms: int = 20,
    bitrate: int = DEFAULT_BITRATE,
    application: str = "voip",
    fec: bool = True,
    packet_loss_percent: int = DEFAULT_EXPECTED_LOSS_PERCENT,
    complexity: int = 10,
) -> Encoder:
    """An Opus encoder on ``backend`` (default: :func:`default_backend`). In-band FEC needs a non-zero
    expected loss to be used by libopus; :func:`encoder_options_from_fmtp` gives both from the SDP."""
    factories: dict[str, Callable[..., Encoder]] = {"pyav": PyAVOpusEncoder, "opuslib": OpuslibOpusEncoder}
    return factories[_resolve(backend, "encoder")](
        frame_ms=frame_ms,
        bitrate=bitrate,
        application=application,
        fec=fec,
        packet_loss_percent=packet_loss_percent,
        complexity=complexity,
    )


def create_opus_decoder(backend: str | None = None, *, frame_ms: int = 20) -> Decoder:
    factories: dict[str, Callable[..., Decoder]] = {"pyav": PyAVOpusDecoder, "opuslib": OpuslibOpusDecoder}
    return factories[_resolve(backend, "decoder")](frame_ms=frame_ms)


class _OpusBase:
    spec = OPUS_SPEC
    sample_rate = OPUS_SAMPLE_RATE
    backend: str


# --- PyAV ------------------------------------------------------------------------------------------


class PyAVOpusEncoder(_OpusBase, Encoder):
    """libopus through FFmpeg. Bitrate, application, FEC and expected loss are fixed at construction
    (FFmpeg reads them when the context opens)."""

    backend = "pyav"

    def __init__(
        self,
        *,
        frame_ms: int = 20,
        bitrate: int = DEFAULT_BITRATE,
        application: str = "voip",
        fec: bool = True,
        packet_loss_percent: int = DEFAULT_EXPECTED_LOSS_PERCENT,
        complexity: int = 10,
    ) -> None:
        import av

        self.frame_ms = _check_frame_ms(frame_ms)
        _check_encoder_options(bitrate, application, packet_loss_percent, complexity)
        self.fec = fec
        self.packet_loss_percent = packet_loss_percent
        self._bitrate = bitrate
        context: Any = av.CodecContext.create("libopus", "w")
        context.sample_rate = OPUS_SAMPLE_RATE
        context.layout = "mono"
        context.format = "s16"
        context.bit_rate = bitrate
        context.options = {
            "compression_level": str(complexity),
            "application": application,
            "frame_duration": str(frame_ms),
            "packet_loss": str(packet_loss_percent),
            "fec": "1" if fec else "0",
        }
        context.open()
        self._context = context
        self._av = av
        self._pts = 0

    @property
    def bitrate(self) -> int:
        """Target bitrate (bit/s); fixed for this encoder — FFmpeg takes it only when opening."""
        return self._bitrate

    def encode(self, pcm: Pcm) -> bytes:
        frame_pcm = check_pcm(pcm, expected_samples=self.samples_per_frame)
        frame = self._av.AudioFrame.from_ndarray(frame_pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = OPUS_SAMPLE_RATE
        frame.pts = self._pts
        self._pts += frame_pcm.shape[0]
        packets = self._context.encode(frame)
        if len(packets) != 1:
            raise CodecError(f"libopus (PyAV) returned {len(packets)} packets for one frame, expected 1")
        return bytes(packets[0])


class PyAVOpusDecoder(_OpusBase, Decoder):
    """libopus through FFmpeg; losses concealed by pitch repetition (FFmpeg exposes no Opus PLC/FEC)."""

    backend = "pyav"

    def __init__(self, *, frame_ms: int = 20) -> None:
        import av

        self.frame_ms = _check_frame_ms(frame_ms)
        context: Any = av.CodecContext.create("libopus", "r")
        context.sample_rate = OPUS_SAMPLE_RATE
        context.layout = "mono"
        self._context = context
        self._av = av
        self._concealer = WaveformConcealer(OPUS_SAMPLE_RATE)

    def decode(self, payload: bytes) -> Pcm:
        data = check_payload(payload)
        try:
            frames = self._context.decode(self._av.Packet(data))
        except self._av.error.FFmpegError as exc:
            raise CodecError(f"Opus payload cannot be decoded: {exc}") from None
        if not frames:
            raise CodecError("Opus payload decoded to no audio")
        parts = [_frame_to_pcm(frame.to_ndarray()) for frame in frames]
        pcm = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return self._concealer.good_frame(pcm)

    def conceal(self, samples: int | None = None) -> Pcm:
        return self._concealer.conceal(self._conceal_length(samples))


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def _frame_to_pcm(array: np.ndarray) -> Pcm:
    mono = array.reshape(-1)
    if mono.dtype == np.int16:
        return mono
    # A float decoder output format (FFmpeg builds differ): scale into int16.
    return np.clip(np.rint(mono.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


# --- opuslib ---------------------------------------------------------------------------------------


class OpuslibOpusEncoder(_OpusBase, Encoder):
    """libopus (system library) through opuslib's ctypes bindings; bitrate can change mid-stream."""

    backend = "opuslib"

    def __init__(
        self,
        *,
        frame_ms: int = 20,
        bitrate: int = DEFAULT_BITRATE,
        application: str = "voip",
        fec: bool = True,
        packet_loss_percent: int = DEFAULT_EXPECTED_LOSS_PERCENT,
        complexity: int = 10,
    ) -> None:
        import opuslib
        import opuslib.api.ctl
        import opuslib.api.encoder

        self.frame_ms = _check_frame_ms(frame_ms)
        _check_encoder_options(bitrate, application, packet_loss_percent, complexity)
        self.fec = fec
        self.packet_loss_percent = packet_loss_percent
        opuslib_application = "restricted_lowdelay" if application == "lowdelay" else application
        self._encoder = opuslib.Encoder(OPUS_SAMPLE_RATE, 1, opuslib_application)
        self._encoder.bitrate = bitrate
        self._encoder.complexity = complexity
        # opuslib 3.0.1's `inband_fec` setter drops its value (TypeError); call the ctl it wraps.
        opuslib.api.encoder.encoder_ctl(self._encoder.encoder_state, opuslib.api.ctl.set_inband_fec, int(fec))
        self._encoder.packet_loss_perc = packet_loss_percent
        self._encode_fn = opuslib.api.encoder.libopus_encode
        self._out = (ctypes.c_char * MAX_PACKET_BYTES)()

    @property
    def bitrate(self) -> int:
        return int(self._encoder.bitrate)

    @bitrate.setter
    def bitrate(self, value: int) -> None:
        if not MIN_BITRATE <= value <= MAX_BITRATE:
            raise CodecError(f"Opus bitrate must be in {MIN_BITRATE}..{MAX_BITRATE} bit/s, got {value}")
        self._encoder.bitrate = value

    def encode(self, pcm: Pcm) -> bytes:
        frame_pcm = np.ascontiguousarray(check_pcm(pcm, expected_samples=self.samples_per_frame))
        pointer = frame_pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_int16))
        length = self._encode_fn(
            self._encoder.encoder_state, pointer, frame_pcm.shape[0], self._out, MAX_PACKET_BYTES
        )
        if length < 0:
            raise CodecError(f"libopus encode failed with error {length}")
        return ctypes.string_at(self._out, length)


class OpuslibOpusDecoder(_OpusBase, Decoder):
    """libopus (system library) through opuslib's ctypes bindings, with libopus's own PLC and FEC."""

    backend = "opuslib"
    # Largest packet duration Opus allows (120 ms) bounds the output buffer.
    _MAX_SAMPLES = OPUS_SAMPLE_RATE * 120 // 1000

    def __init__(self, *, frame_ms: int = 20) -> None:
        import opuslib
        import opuslib.api.decoder

        self.frame_ms = _check_frame_ms(frame_ms)
        self._decoder = opuslib.Decoder(OPUS_SAMPLE_RATE, 1)
        self._decode_fn = opuslib.api.decoder.libopus_decode
        self._out = np.zeros(self._MAX_SAMPLES, dtype=np.int16)
        self._out_pointer = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_int16))

    @property
    def supports_fec(self) -> bool:
        return True

    def decode(self, payload: bytes) -> Pcm:
        data = check_payload(payload)
        return self._run(data, self._MAX_SAMPLES, fec=False)

    def conceal(self, samples: int | None = None) -> Pcm:
        """libopus PLC for ``samples`` lost samples. libopus conceals whole 2.5 ms steps of at most
        120 ms: longer gaps run it repeatedly and an uneven count is rounded up and trimmed."""
        count = self._conceal_length(samples)
        parts = []
        remaining = count
        while remaining > 0:
            step = min(_round_up(remaining, _PLC_GRANULE), self._MAX_SAMPLES)
            parts.append(self._run(None, step, fec=False))
            remaining -= step
        pcm = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return pcm[:count]

    def has_fec(self, next_payload: bytes) -> bool:
        return packet_has_fec(bytes(next_payload))

    def conceal_with_next(self, next_payload: bytes, samples: int | None = None) -> Pcm:
        """The lost frame rebuilt from the FEC data in ``next_payload``; exactly :meth:`conceal` when that
        packet carries none (libopus would run its PLC too, but through its FEC path, which can differ
        by a sample). FEC covers at most the 120 ms before that packet; conceal anything lost before
        with :meth:`conceal`. ``next_payload`` must still be decoded normally afterwards."""
        data = check_payload(next_payload)
        count = self._conceal_length(samples)
        if count > self._MAX_SAMPLES:
            raise CodecError(f"Opus FEC recovers at most {self._MAX_SAMPLES} samples (120 ms), got {count}")
        if not packet_has_fec(data):
            return self.conceal(count)
        return self._run(data, _round_up(count, _PLC_GRANULE), fec=True)[:count]

    def _run(self, data: bytes | None, frame_size: int, *, fec: bool) -> Pcm:
        length = 0 if data is None else len(data)
        result = self._decode_fn(
            self._decoder.decoder_state, data, length, self._out_pointer, frame_size, int(fec)
        )
        if result < 0:
            raise CodecError(f"Opus payload cannot be decoded (libopus error {result})")
        return self._out[:result].copy()
