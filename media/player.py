"""Media sources for ``play()``: WAV files and tones, encoded for the endpoint's codec, one frame per tick.

Sources: ``tone:FREQ`` or ``tone:FREQ:MILLISECONDS`` (a sine at -12 dBFS; 1 s by default), or a path to a
PCM WAV file (8/16-bit, mono or stereo — downmixed —, any sample rate, resampled to the codec's rate; at
most ``MAX_WAV_SECONDS``). With ``loop`` the source restarts at its end until replaced or stopped.
A :class:`Playback` holds the endpoint's outgoing stream while it plays (relayed audio is muted), and
reports ``PlaybackFinished`` when it ends on its own or is stopped.
"""

from __future__ import annotations

import math
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from media.codecs import CodecError, Resampler, create_encoder
from media.codecs.base import Pcm
from media.control import MediaError, PayloadFormat
from media.endpoint import RtpEndpoint

MAX_WAV_SECONDS = 600
DEFAULT_TONE_MS = 1000
TONE_AMPLITUDE = 8192  # -12 dBFS


def load_source(source: str, sample_rate: int) -> Pcm:
    """The whole source as mono int16 at ``sample_rate``; :class:`MediaError` saying what is wrong."""
    if source.startswith("tone:"):
        return _tone(source, sample_rate)
    return _wav(Path(source), sample_rate)


def _tone(source: str, sample_rate: int) -> Pcm:
    parts = source.split(":")
    try:
        frequency = float(parts[1])
        milliseconds = int(parts[2]) if len(parts) > 2 else DEFAULT_TONE_MS
    except (IndexError, ValueError):
        raise MediaError(f"tone source must be tone:FREQ[:MS], got {source!r}") from None
    if (
        len(parts) > 3
        or not 0 < frequency < sample_rate / 2
        or not 0 < milliseconds <= MAX_WAV_SECONDS * 1000
    ):
        raise MediaError(f"tone {source!r} is out of range for {sample_rate} Hz audio")
    count = sample_rate * milliseconds // 1000
    t = np.arange(count) / sample_rate
    return (TONE_AMPLITUDE * np.sin(2 * math.pi * frequency * t)).astype(np.int16)


def _wav(path: Path, sample_rate: int) -> Pcm:
    try:
        with wave.open(str(path), "rb") as reader:
            channels, width, rate, frames = (
                reader.getnchannels(),
                reader.getsampwidth(),
                reader.getframerate(),
                reader.getnframes(),
            )
            if width not in (1, 2) or channels not in (1, 2):
                raise MediaError(f"{path}: only 8/16-bit mono or stereo PCM WAV is supported")
            if frames > rate * MAX_WAV_SECONDS:
                raise MediaError(f"{path}: longer than {MAX_WAV_SECONDS} s")
            raw = reader.readframes(frames)
    except (OSError, EOFError, wave.Error) as exc:
        raise MediaError(f"cannot read WAV {path}: {exc}") from None
    if width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128) << 8
    else:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.int16)
    if channels == 2:
        samples = (samples.reshape(-1, 2).astype(np.int32).sum(axis=1) // 2).astype(np.int16)
    if rate == sample_rate:
        return samples
    try:
        return Resampler(rate, sample_rate, rates=(rate, sample_rate)).process(samples)
    except ValueError as exc:
        raise MediaError(f"{path}: cannot resample {rate} Hz to {sample_rate} Hz: {exc}") from None


class Playback:
    """Plays one source on one endpoint; call :meth:`tick` every 20 ms."""

    def __init__(
        self,
        playback_id: str,
        endpoint: RtpEndpoint,
        source: str,
        send_format: PayloadFormat,
        *,
        loop: bool,
        on_finished: Callable[[Playback], None],
    ) -> None:
        try:
            self._encoder = create_encoder(send_format.encoding, fmtp=send_format.fmtp)
        except (CodecError, ValueError) as exc:
            raise MediaError(f"cannot play on {send_format.encoding}: {exc}") from None
        self.playback_id = playback_id
        self.endpoint = endpoint
        self._format = send_format
        self._pcm = load_source(source, self._encoder.sample_rate)
        if self._pcm.shape[0] == 0:
            raise MediaError(f"source {source!r} holds no audio")
        self._loop = loop
        self._position = 0
        self._on_finished = on_finished
        self.finished = False
        endpoint.output.local_owner = self

    def tick(self, now: float) -> None:
        if self.finished:
            return
        size = self._encoder.samples_per_frame
        frame = self._pcm[self._position : self._position + size]
        self._position += size
        if frame.shape[0] < size:
            if self._loop:
                self._position = size - frame.shape[0]
                frame = np.concatenate((frame, self._pcm[: self._position]))
            elif frame.shape[0] == 0:
                self.stop()
                return
            else:
                frame = np.concatenate((frame, np.zeros(size - frame.shape[0], dtype=np.int16)))
        output = self.endpoint.output
        output.send_local(
            self._encoder.encode(frame), self._format.payload_type, self._encoder.timestamp_increment, now
        )

    def stop(self) -> None:
        if self.finished:
            return
        self.finished = True
        output = self.endpoint.output
        if output.local_owner is self:
            output.local_owner = None
        self._on_finished(self)
