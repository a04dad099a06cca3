"""DTMF: RFC 4733 telephone-event payloads, a sender, a once-per-digit receiver, and SIP INFO bodies.

Pure and sans-IO. The sender produces ``DtmfPacket`` descriptions (marker, RTP timestamp, payload); the
RTP stream that carries them assigns sequence numbers and the SSRC. The receiver turns telephone-event
packets into one ``DigitEvent`` per digit, whatever the loss or retransmission pattern; SIP INFO bodies
(``application/dtmf-relay``, ``application/dtmf``) parse into the same ``DigitEvent``.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from dataclasses import dataclass

DTMF_DIGITS = "0123456789*#ABCD"
"""Event codes 0..15 (RFC 4733 §3.2); code 16 is hook flash."""
FLASH_EVENT = 16
FLASH = "flash"

_EVENT = struct.Struct("!BBH")


def digit_to_event(digit: str) -> int:
    if digit == FLASH:
        return FLASH_EVENT
    index = DTMF_DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise ValueError(f"DTMF digit is invalid: {digit!r}")
    return index


def event_to_digit(event: int) -> str | None:
    """The digit for a DTMF event code, or None for codes that are not DTMF (tones, modem, ...)."""
    if 0 <= event < len(DTMF_DIGITS):
        return DTMF_DIGITS[event]
    if event == FLASH_EVENT:
        return FLASH
    return None


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 §2.3 event payload (4 octets)."""

    event: int
    end: bool = False
    volume: int = 10
    """Power level in -dBm0 (0..63)."""
    duration: int = 0
    """Duration so far, in timestamp units."""

    @classmethod
    def parse(cls, data: bytes) -> TelephoneEvent:
        if len(data) < 4:
            raise ValueError("telephone-event payload is too short")
        if len(data) % 4:
            raise ValueError("telephone-event payload length is invalid")
        event, flags, duration = _EVENT.unpack_from(data)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def __bytes__(self) -> bytes:
        if not 0 <= self.event <= 255:
            raise ValueError("telephone-event code must be in 0..255")
        if not 0 <= self.volume <= 63:
            raise ValueError("telephone-event volume must be in 0..63")
        if not 0 <= self.duration <= 0xFFFF:
            raise ValueError("telephone-event duration must be in 0..65535")
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


@dataclass(frozen=True, slots=True)
class DigitEvent:
    """A detected digit, whatever carried it. Call control acts on these."""

    digit: str
    duration: float | None
    """Seconds, when known."""
    source: str
    """"rfc4733" or "sip-info"."""
    timestamp: int | None = None
    """RTP timestamp of the event (RFC 4733 only)."""


@dataclass(frozen=True, slots=True)
class DtmfPacket:
    """One telephone-event RTP packet to send; the stream adds sequence number, SSRC, payload type."""

    marker: bool
    timestamp: int
    event: TelephoneEvent

    @property
    def payload(self) -> bytes:
        return bytes(self.event)


# --- sender ---------------------------------------------------------------------------------------------


def digit_packets(
    digit: str,
    *,
    start_time: float,
    timestamp: int,
    duration: float,
    clock_rate: int = 8000,
    volume: int = 10,
    update_interval: float = 0.05,
    end_repeats: int = 3,
) -> list[tuple[float, DtmfPacket]]:
    """The packets for one digit with their send times (RFC 4733 §2.5.1).

    The first packet carries the marker and, like the updates every ``update_interval``, the duration
    the tone will have reached by the next update (never zero, which some receivers drop); then the
    final duration with the E bit is sent ``end_repeats`` times, one interval apart. Every packet of the
    event carries the event's start ``timestamp``.
    """
    event = digit_to_event(digit)
    total = round(duration * clock_rate)
    step = round(update_interval * clock_rate)
    if total <= 0 or step <= 0:
        raise ValueError("DTMF duration and update interval must be positive")
    if total > 0xFFFF:
        # Long-duration segmentation (RFC 4733 §2.5.1.3) is not needed for keypad digits.
        raise ValueError("DTMF duration does not fit one telephone-event segment")
    packets: list[tuple[float, DtmfPacket]] = []
    timestamp &= 0xFFFFFFFF
    updates = max(1, math.ceil(total / step)) - 1
    for index in range(updates):
        packets.append(
            (
                start_time + index * update_interval,
                DtmfPacket(index == 0, timestamp, TelephoneEvent(event, False, volume, (index + 1) * step)),
            )
        )
    end_event = TelephoneEvent(event, True, volume, total)
    for repeat in range(end_repeats):
        packets.append(
            (
                start_time + (updates + repeat) * update_interval,
                DtmfPacket(updates == 0 and repeat == 0, timestamp, end_event),
            )
        )
    return packets


class DtmfSender:
    """Queues digits and releases their packets as ``now`` advances (``poll``/``get_timer``)."""

    __slots__ = ("_clock_rate", "_end_repeats", "_free_at", "_queue", "_update_interval", "_volume")

    def __init__(
        self,
        clock_rate: int = 8000,
        *,
        volume: int = 10,
        update_interval: float = 0.05,
        end_repeats: int = 3,
    ) -> None:
        if clock_rate <= 0:
            raise ValueError("clock rate must be positive")
        self._clock_rate = clock_rate
        self._volume = volume
        self._update_interval = update_interval
        self._end_repeats = end_repeats
        self._queue: deque[tuple[float, DtmfPacket]] = deque()
        self._free_at = -math.inf

    def send(self, digits: str, now: float, timestamp: int, duration: float = 0.1) -> None:
        """Queue ``digits``; ``timestamp`` is the RTP timestamp of the carrying stream at ``now``.

        Digits follow each other one update interval after the previous digit's last end packet.
        """
        for digit in digits:
            digit_to_event(digit)  # validate them all before queueing any
        start = max(now, self._free_at)
        for digit in digits:
            event_timestamp = timestamp + round((start - now) * self._clock_rate)
            packets = digit_packets(
                digit,
                start_time=start,
                timestamp=event_timestamp,
                duration=duration,
                clock_rate=self._clock_rate,
                volume=self._volume,
                update_interval=self._update_interval,
                end_repeats=self._end_repeats,
            )
            self._queue.extend(packets)
            start = packets[-1][0] + self._update_interval
        self._free_at = start

    @property
    def busy(self) -> bool:
        return bool(self._queue)

    def get_timer(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def poll(self, now: float) -> list[DtmfPacket]:
        """The packets due at ``now``, in order."""
        due: list[DtmfPacket] = []
        queue = self._queue
        while queue and queue[0][0] <= now:
            due.append(queue.popleft()[1])
        return due


# --- receiver -------------------------------------------------------------------------------------------


class DtmfReceiver:
    """Turns telephone-event packets into exactly one ``DigitEvent`` per digit.

    An event is identified by its RTP timestamp. A digit is reported when its first end packet arrives,
    when a packet of a newer event arrives first (all end packets lost), or on ``handle_timer`` once no
    packet has arrived for ``timeout`` seconds. A lost start packet does not matter: any packet of a new
    event starts it. Retransmitted end packets of reported events are ignored.
    """

    __slots__ = ("_clock_rate", "_current", "_finished", "_timeout")

    def __init__(self, clock_rate: int = 8000, *, timeout: float = 0.5, remembered: int = 16) -> None:
        if clock_rate <= 0:
            raise ValueError("clock rate must be positive")
        self._clock_rate = clock_rate
        self._timeout = timeout
        # (timestamp, digit, duration, last packet time)
        self._current: tuple[int, str, int, float] | None = None
        self._finished: deque[int] = deque(maxlen=remembered)

    def receive(self, payload: bytes, timestamp: int, now: float) -> list[DigitEvent]:
        """Feed one telephone-event RTP payload; raises ValueError on a malformed payload."""
        event = TelephoneEvent.parse(payload)
        digit = event_to_digit(event.event)
        if digit is None or timestamp in self._finished:
            return []
        reported: list[DigitEvent] = []
        current = self._current
        if current is not None and current[0] != timestamp:
            reported.append(self._finish())
        current = self._current
        duration = event.duration if current is None else max(current[2], event.duration)
        self._current = (timestamp, digit, duration, now)
        if event.end:
            reported.append(self._finish())
        return reported

    def get_timer(self) -> float | None:
        return None if self._current is None else self._current[3] + self._timeout

    def handle_timer(self, now: float) -> list[DigitEvent]:
        current = self._current
        if current is None or now < current[3] + self._timeout:
            return []
        return [self._finish()]

    def _finish(self) -> DigitEvent:
        current = self._current
        assert current is not None
        timestamp, digit, duration, _ = current
        self._current = None
        self._finished.append(timestamp)
        return DigitEvent(digit, duration / self._clock_rate, "rfc4733", timestamp)


# --- SIP INFO -------------------------------------------------------------------------------------------

MAX_INFO_BODY = 1024
_SIGNAL_ALIASES = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D", "16": FLASH}


def _parse_signal(value: str) -> str:
    signal = value.strip()
    signal = _SIGNAL_ALIASES.get(signal, signal)
    if signal == FLASH or signal.lower() == "hf":
        return FLASH
    if len(signal) != 1 or signal.upper() not in DTMF_DIGITS:
        raise ValueError(f"dtmf-relay signal is invalid: {value.strip()!r}")
    return signal.upper()


def parse_dtmf_relay(body: bytes | str) -> DigitEvent:
    """Parse an ``application/dtmf-relay`` body, e.g. ``"Signal=5\\r\\nDuration=160"`` (milliseconds)."""
    if len(body) > MAX_INFO_BODY:
        raise ValueError("dtmf-relay body is too long")
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    signal: str | None = None
    duration: float | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        name, separator, value = line.partition("=")
        if not separator:
            raise ValueError(f"dtmf-relay line is invalid: {line.strip()!r}")
        key = name.strip().lower()
        if key == "signal":
            signal = _parse_signal(value)
        elif key == "duration":
            try:
                milliseconds = int(value.strip())
            except ValueError:
                raise ValueError("dtmf-relay duration is invalid") from None
            if not 0 <= milliseconds <= 60_000:
                raise ValueError("dtmf-relay duration is invalid")
            duration = milliseconds / 1000.0
    if signal is None:
        raise ValueError("dtmf-relay body has no Signal")
    return DigitEvent(signal, duration, "sip-info")


def parse_dtmf_info(content_type: str, body: bytes | str) -> DigitEvent:
    """A SIP INFO DTMF body by content type: ``application/dtmf-relay`` or ``application/dtmf``."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/dtmf-relay":
        return parse_dtmf_relay(body)
    if media_type == "application/dtmf":
        if len(body) > MAX_INFO_BODY:
            raise ValueError("dtmf body is too long")
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        return DigitEvent(_parse_signal(text), None, "sip-info")
    raise ValueError(f"SIP INFO content type is not DTMF: {media_type!r}")
