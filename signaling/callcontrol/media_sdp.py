"""SDP for an anchored call: our offers and answers carry OUR media address, and the negotiated stream
becomes the :class:`~media.control.StreamParams` the media plane is configured with. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from media.control import Direction as MediaDirection
from media.control import LocalMedia, PayloadFormat, StreamParams
from signaling.sdp import (
    Codec,
    Direction,
    MediaDescription,
    OfferStream,
    Origin,
    SessionDescription,
    create_answer,
    create_offer,
    negotiate,
)

# MediaDirection(value) without the enum call machinery (twice per call); the names are the same.
_MEDIA_DIRECTION_BY_NAME = {direction.value: direction for direction in MediaDirection}


def _origin(local: LocalMedia, session_id: str) -> Origin:
    addrtype = "IP6" if ":" in local.address else "IP4"
    return Origin("uc-edge", session_id, 1, local.address, addrtype=addrtype)


def build_offer(
    local: LocalMedia, codecs: Sequence[Codec], session_id: str, direction: Direction = Direction.SENDRECV
) -> SessionDescription:
    """A fresh offer from our codec list (never a copy of the other leg's SDP)."""
    return create_offer(
        _origin(local, session_id), local.address, [OfferStream(local.rtp_port, codecs, direction=direction)]
    )


def build_answer(
    offer: SessionDescription, local: LocalMedia, codecs: Sequence[Codec], session_id: str
) -> SessionDescription:
    """Our answer on ``local``; raises NoCommonCodecError (→ 488)."""
    return create_answer(
        offer, origin=_origin(local, session_id), address=local.address, port=local.rtp_port, supported=codecs
    )


def check_offer(offer: SessionDescription, codecs: Sequence[Codec]) -> None:
    """Raise NoCommonCodecError when ``offer`` shares no voice codec with ours."""
    negotiate(offer, codecs)


def with_direction(sdp: SessionDescription, direction: Direction) -> SessionDescription:
    """A copy of ``sdp`` whose audio streams declare ``direction`` (hold/resume re-offers)."""
    copy = SessionDescription.parse(bytes(sdp))
    for name in ("sendrecv", "sendonly", "recvonly", "inactive"):
        copy.remove_attributes(name)
    for media in copy.media:
        if not media.rejected:
            media.set_direction(direction)
    return copy


def _audio_pair(
    local: SessionDescription, remote: SessionDescription
) -> tuple[MediaDescription, MediaDescription] | None:
    for ours, theirs in zip(local.media, remote.media, strict=False):
        if ours.media == "audio" and ours.is_rtp and not ours.rejected and not theirs.rejected:
            return ours, theirs
    return None


def _payload(codec: Codec) -> PayloadFormat:
    assert codec.payload_type is not None
    return PayloadFormat(codec.payload_type, codec.name, codec.clock_rate, codec.channels, codec.fmtp or "")


def remote_direction(remote: SessionDescription) -> Direction:
    """What the peer declared for its audio stream (0.0.0.0 counts as "do not send to me")."""
    for media in remote.media:
        if media.media == "audio" and not media.rejected:
            return remote.effective_direction_of(media)
    return Direction.INACTIVE


def local_direction(local: SessionDescription) -> Direction:
    for media in local.media:
        if media.media == "audio" and not media.rejected:
            return local.direction_of(media)
    return Direction.INACTIVE


def stream_params(local: SessionDescription, remote: SessionDescription) -> StreamParams | None:
    """The negotiated audio stream of one leg, from our point of view; None when audio was rejected.

    We send with the peer's payload type numbers (the ones in its description) and accept the codecs
    both sides listed.
    """
    pair = _audio_pair(local, remote)
    if pair is None:
        return None
    ours, theirs = pair
    # Codec.matches compares (lower-cased name, clock rate, channels): one set lookup per codec.
    our_keys = {(mine.name.lower(), mine.clock_rate, mine.channels) for mine in ours.codecs()}
    common = [
        codec
        for codec in theirs.codecs()
        if (codec.name.lower(), codec.clock_rate, codec.channels) in our_keys
    ]
    voice = [codec for codec in common if codec.is_voice]
    if not voice:
        return None
    events = next((codec for codec in common if codec.name.lower() == "telephone-event"), None)
    connection = remote.connection_for(theirs)
    address = connection.address.split("/", 1)[0] if connection is not None else None
    ptime = theirs.ptime or ours.ptime or 20
    return StreamParams(
        remote_address=address,
        remote_port=theirs.port,
        send_format=_payload(voice[0]),
        formats=tuple(_payload(codec) for codec in voice),
        telephone_event=_payload(events) if events is not None else None,
        direction=_MEDIA_DIRECTION_BY_NAME[local.direction_of(ours).value],
        ptime_ms=int(ptime),
        rtcp_mux=ours.rtcp_mux and theirs.rtcp_mux,
    )
