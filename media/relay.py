"""Packet relay between two endpoints whose send formats match: no decoding, only the header changes.

A :class:`RelayLink` is the receive sink of its source endpoint. Each packet's payload type is mapped to
the target's (the same codec may carry another dynamic number on the other leg; telephone-event too), and
the target's :class:`~media.endpoint.OutgoingStream` rewrites SSRC, sequence number and timestamp so the
far end sees one continuous stream across re-INVITEs, source SSRC changes and switches to local media
(see ``media.rtp.SequenceRewriter``). Payload types with no counterpart on the target are dropped and
counted. ``RelayLink(endpoint, endpoint)`` is the echo test: what comes in goes back out.

The per-packet cost is one list lookup, one rewrite (a few integer operations) and one 12-byte
``pack_into`` on a copy of the datagram. Figures: ``bench/suites/rtp_relay.py``.
"""

from __future__ import annotations

from media.control import PayloadFormat
from media.endpoint import RtpEndpoint, same_codec

_NO_ROUTE = -1


def payload_type_map(source: RtpEndpoint, target: RtpEndpoint) -> list[int]:
    """Target payload type for each source payload type (index 0..127), ``-1`` where none exists."""
    mapping = [_NO_ROUTE] * 128
    source_params, target_params = source.params, target.params
    if source_params is None or target_params is None:
        return mapping
    send_format = target_params.send_format
    offered: list[PayloadFormat] = [*source_params.formats, source_params.send_format]
    for fmt in offered:
        if same_codec(fmt, send_format):
            mapping[fmt.payload_type] = send_format.payload_type
    source_event, target_event = source_params.telephone_event, target_params.telephone_event
    if (
        source_event is not None
        and target_event is not None
        and source_event.clock_rate == target_event.clock_rate
    ):
        mapping[source_event.payload_type] = target_event.payload_type
    return mapping


def relays_telephone_event(source: RtpEndpoint, target: RtpEndpoint) -> bool:
    """Whether RFC 4733 packets can pass as they are (else digits must be regenerated on the target)."""
    source_params = source.params
    if source_params is None or source_params.telephone_event is None:
        return False
    return payload_type_map(source, target)[source_params.telephone_event.payload_type] != _NO_ROUTE


class RelayLink:
    """Relays one direction, ``source`` → ``target``; install with ``source.sink = link``."""

    __slots__ = ("_map", "dropped_unmapped", "relayed", "source", "target")

    def __init__(self, source: RtpEndpoint, target: RtpEndpoint) -> None:
        self.source = source
        self.target = target
        self._map = payload_type_map(source, target)
        self.relayed = 0
        self.dropped_unmapped = 0

    def refresh(self) -> None:
        """Re-read both ends' negotiated formats (after a re-INVITE on either leg)."""
        self._map = payload_type_map(self.source, self.target)

    def __call__(
        self,
        source: RtpEndpoint,
        data: bytes,
        payload_type: int,
        sequence: int,
        timestamp: int,
        ssrc: int,
        marker: bool,
        now: float,
    ) -> None:
        out_type = self._map[payload_type]
        if out_type < 0:
            self.dropped_unmapped += 1
            return
        self.relayed += 1
        self.target.output.forward(data, out_type, sequence, timestamp, ssrc, marker, now)
