"""The ``MediaControl`` port: everything call control may ask of the media plane, and what it hears back.

Signalling never touches RTP (ARCHITECTURE.md, layering rules). Call control negotiates SDP, then tells
the media plane, through this port only, which local endpoints to open, what the far end negotiated, and
which endpoints to bridge. The media plane decides *how* (relay when both sides share a codec, transcode
otherwise) and reports back with :class:`MediaEvent` values. ``media/`` provides the real implementation;
tests may use an in-memory fake that records calls.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol


class Direction(enum.Enum):
    """RFC 3264 stream direction, from the point of view of the local endpoint."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)


@dataclass(frozen=True, slots=True)
class PayloadFormat:
    """One negotiated RTP payload type: ``encoding`` as in the SDP rtpmap (``PCMU``, ``opus``…)."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int = 1
    fmtp: str = ""


@dataclass(frozen=True, slots=True)
class LocalMedia:
    """Where an endpoint receives: goes into our SDP (``c=`` address and ``m=`` port)."""

    endpoint_id: str
    address: str
    rtp_port: int
    rtcp_port: int


@dataclass(frozen=True, slots=True)
class StreamParams:
    """The negotiated stream of one endpoint (from the offer/answer exchange with its leg's peer).

    ``send_format`` is what we send to the peer (first codec of the answer); ``formats`` everything we
    accept from it. ``remote_address``/``remote_port`` may be unknown (``None``) or wrong behind NAT:
    the endpoint latches onto where the peer's RTP really comes from (symmetric RTP).
    """

    remote_address: str | None
    remote_port: int | None
    send_format: PayloadFormat
    formats: tuple[PayloadFormat, ...]
    telephone_event: PayloadFormat | None = None
    direction: Direction = Direction.SENDRECV
    ptime_ms: int = 20
    rtcp_mux: bool = False


@dataclass(frozen=True, slots=True)
class QualitySnapshot:
    """Receive-side quality of one endpoint (RFC 3550 statistics + an E-model MOS estimate)."""

    packets_received: int = 0
    packets_sent: int = 0
    packets_lost: int = 0
    loss_percent: float = 0.0
    jitter_ms: float = 0.0
    rtt_ms: float | None = None
    mos: float | None = None
    codec: str = ""
    extra: Mapping[str, float] = field(default_factory=dict)


class MediaEvent:
    """Marker base class of everything the media plane reports."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class DtmfReceived(MediaEvent):
    endpoint_id: str
    digit: str
    duration_ms: int
    source: str  # "rfc4733" or "inband"


@dataclass(frozen=True, slots=True)
class MediaTimeout(MediaEvent):
    """No RTP for the configured time while the stream should be receiving (not on hold)."""

    endpoint_id: str
    silent_seconds: float


@dataclass(frozen=True, slots=True)
class QualityReport(MediaEvent):
    endpoint_id: str
    snapshot: QualitySnapshot


@dataclass(frozen=True, slots=True)
class PlaybackFinished(MediaEvent):
    endpoint_id: str
    playback_id: str


class MediaError(Exception):
    """The media plane could not do what was asked (no free port, unknown endpoint, codec missing)."""


class MediaControl(Protocol):
    async def create_endpoint(self, call_id: str, leg_id: str) -> LocalMedia:
        """Open an RTP endpoint (RTP + RTCP ports from the configured range) for one leg."""
        ...

    async def configure(self, endpoint_id: str, params: StreamParams) -> None:
        """Apply (or re-apply, after a re-INVITE) the stream negotiated with the leg's peer."""
        ...

    async def connect(self, a: str, b: str) -> None:
        """Bridge two endpoints both ways: relay when their send formats match, transcode otherwise."""
        ...

    async def disconnect(self, a: str, b: str) -> None: ...

    async def echo(self, endpoint_id: str) -> None:
        """Send back what the endpoint receives (the echo test number)."""
        ...

    async def play(self, endpoint_id: str, source: str, *, loop: bool = False) -> str:
        """Play a WAV file or a ``tone:FREQ`` to the peer; returns a playback id."""
        ...

    async def send_dtmf(self, endpoint_id: str, digit: str, duration_ms: int = 100) -> None:
        """Send one RFC 4733 digit to the endpoint's peer."""
        ...

    async def destroy(self, endpoint_id: str) -> QualitySnapshot:
        """Close the endpoint and return its final quality figures."""
        ...

    def events(self) -> AsyncIterator[MediaEvent]:
        """Every event of every endpoint, in order, for the lifetime of the media plane."""
        ...
