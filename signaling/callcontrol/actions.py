"""What the pure :class:`~signaling.callcontrol.call.Call` asks its shell to do, and the routes it is fed.

Actions are small frozen dataclasses. The shell executes :class:`SendSip` at once, media actions in
order on the call's media queue (feeding :class:`CreateEndpoint` results back), repository actions in
order on the call's persistence queue, and :class:`ResolveRoute` with the router (feeding the
:class:`Route` back).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from media.control import StreamParams
from signaling.callcontrol.config import Trunk, TrunkFailover
from signaling.sip.invite import Outgoing
from signaling.sip.routing import TransportAddress
from storage.ports import NewCall, NewCdr, NewLeg, QualityReport


class Action:
    """Marker base class of everything a call asks for."""

    __slots__ = ()


# ---------------------------------------------------------------- SIP


@dataclass(frozen=True, slots=True)
class SendSip(Action):
    """Hand one invite-session output to the transaction layer; requests/ACKs go to ``destination``."""

    leg_id: uuid.UUID
    message: Outgoing
    destination: TransportAddress | None


# ---------------------------------------------------------------- media (MediaControl port)


class MediaAction(Action):
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class CreateEndpoint(MediaAction):
    leg_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ConfigureEndpoint(MediaAction):
    endpoint_id: str
    params: StreamParams


@dataclass(frozen=True, slots=True)
class ConnectEndpoints(MediaAction):
    a: str
    b: str


@dataclass(frozen=True, slots=True)
class DisconnectEndpoints(MediaAction):
    a: str
    b: str


@dataclass(frozen=True, slots=True)
class EchoEndpoint(MediaAction):
    endpoint_id: str


@dataclass(frozen=True, slots=True)
class SendDtmf(MediaAction):
    endpoint_id: str
    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class DestroyEndpoint(MediaAction):
    endpoint_id: str
    leg_id: uuid.UUID


# ---------------------------------------------------------------- persistence (CallRepository, CdrRepository)


class PersistAction(Action):
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class RecordCallStart(PersistAction):
    call: NewCall


@dataclass(frozen=True, slots=True)
class RecordLeg(PersistAction):
    call_id: uuid.UUID
    leg: NewLeg


@dataclass(frozen=True, slots=True)
class RecordLegState(PersistAction):
    leg_id: uuid.UUID
    state: str
    reason: str | None
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class RecordRouting(PersistAction):
    call_id: uuid.UUID
    step: int
    target: str
    result: str
    sip_status: int | None
    leg_id: uuid.UUID | None
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class RecordAnswer(PersistAction):
    call_id: uuid.UUID
    leg_id: uuid.UUID
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class RecordEnd(PersistAction):
    call_id: uuid.UUID
    termination_cause: str
    sip_status: int | None
    ended_by: str | None
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class RecordCdr(PersistAction):
    cdr: NewCdr


@dataclass(frozen=True, slots=True)
class RecordQuality(PersistAction):
    """A leg's media quality at its end (written by the shell, from what the media plane reported)."""

    call_id: uuid.UUID
    report: QualityReport


# ---------------------------------------------------------------- routing


@dataclass(frozen=True, slots=True)
class RouteQuery:
    """Where should ``user@host`` go? ``depth`` counts forwarding hops already taken."""

    user: str
    host: str
    caller_account_id: uuid.UUID | None
    from_trunk: str | None


@dataclass(frozen=True, slots=True)
class ResolveRoute(Action):
    step: int
    query: RouteQuery


@dataclass(frozen=True, slots=True)
class ReportTrunkFailover(Action):
    """A B leg's INVITE gave up on one address of a trunk for the next: the runner counts it and tells
    the listeners of ``TrunkAddresses`` (the node logs it), outside the call's step."""

    failover: TrunkFailover


@dataclass(frozen=True, slots=True)
class Contact:
    """One place to ring: the request goes to ``uri``, over ``flow`` when set (registered flows, trunks).

    ``failover``: where the same request goes next, one after the other, when the INVITE over ``flow``
    gets no response (Timer B), hits a transport error or is answered 503 (RFC 3263 §4.3): the other
    addresses a trunk's host name resolved to."""

    uri: str
    flow: TransportAddress | None = None
    failover: tuple[TransportAddress, ...] = ()


class Route:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class RouteToContacts(Route):
    """Ring every contact in parallel; ``target`` names the attempt (AOR or trunk URI) in call_routing."""

    target: str
    contacts: tuple[Contact, ...]
    to_uri: str
    account_id: uuid.UUID | None = None
    trunk: Trunk | None = None
    leg_type: str = "sip"


@dataclass(frozen=True, slots=True)
class RouteEcho(Route):
    target: str


@dataclass(frozen=True, slots=True)
class RouteReject(Route):
    """No place to ring: answer ``status`` (404 unknown user, 480 not registered, 403, 603…)."""

    target: str
    status: int
    result: str
    reason: str = ""
