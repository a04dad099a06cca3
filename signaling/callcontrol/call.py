"""One B2BUA call as a pure state machine (sans-IO): invite sessions in, actions out.

A call is an A leg (the UAS :class:`~signaling.sip.invite.InviteSession` of the caller's INVITE) and
B legs (UAC sessions we create), each with its own dialog. The server anchors media: every leg gets
its own media endpoint, every SDP we send carries that endpoint's address, and the endpoints of the
two bridged legs are connected. Nothing here does I/O or reads a clock::

    call = Call(invite, transaction=key, source=src, now=now, caller=identity, env=env)
    call.handle_request(request, transaction, now)       # in-dialog requests of any leg (ACK too)
    call.handle_cancel(cancel, transaction, now)          # CANCEL of the caller's INVITE
    call.handle_response(response, now)                   # responses to our requests on any leg
    call.request_failed(leg_id, method, cseq, now, status)
    call.handle_route(step, route, now)                   # answer to a ResolveRoute action
    call.handle_endpoint(leg_id, local_media_or_None, now, error=...)  # answer to CreateEndpoint
    call.handle_media_event(event, now)                   # MediaTimeout, DtmfReceived...
    call.actions() -> list[Action]                        # SIP sends, media calls, repository writes
    call.get_timer() / call.handle_timer(now)

Routing: the first ResolveRoute (step 1) places the call; forks ring in parallel and the first 2xx
wins (the others are CANCELed with ``Reason: SIP;cause=200;text="Call completed elsewhere"``).
A contact with ``failover`` addresses (a trunk whose name resolved to several) is tried one address
after the other within its step: an INVITE with no response (Timer B), a transport error or a 503
before any 1xx beyond 100 goes again, as a new leg, to the next address (RFC 3263 §4.3).
Blind transfer (REFER) resolves a new route for the party that stays and replaces the transferor.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import Callable, Iterable, Mapping

from media.control import DtmfReceived, LocalMedia, MediaEvent, MediaTimeout
from signaling.callcontrol.actions import (
    Action,
    ConfigureEndpoint,
    ConnectEndpoints,
    CreateEndpoint,
    DestroyEndpoint,
    DisconnectEndpoints,
    EchoEndpoint,
    RecordAnswer,
    RecordCallStart,
    RecordCdr,
    RecordEnd,
    RecordLeg,
    RecordLegState,
    RecordRouting,
    ReportTrunkFailover,
    ResolveRoute,
    Route,
    RouteEcho,
    RouteQuery,
    RouteReject,
    RouteToContacts,
    SendDtmf,
    SendSip,
)
from signaling.callcontrol.config import CallControlConfig, Trunk, TrunkFailover
from signaling.callcontrol.media_sdp import (
    build_answer,
    build_offer,
    check_offer,
    local_direction,
    remote_direction,
    stream_params,
    with_direction,
)
from signaling.callcontrol.messages import SIPFRAG_TYPE, parse_dtmf_info, refer_target, sipfrag
from signaling.sdp import Direction, NoCommonCodecError, SessionDescription
from signaling.sip.dialog import LocalAddress, uri_of
from signaling.sip.digest import Challenge, build_authorization
from signaling.sip.errors import LocalProtocolError
from signaling.sip.invite import (
    ALLOWED_METHODS,
    Answered,
    EarlyMedia,
    InDialogRequest,
    InviteEvent,
    InviteSession,
    InviteState,
    MediaUpdate,
    OfferRejected,
    Outgoing,
    Reason,
    Ringing,
    SendResponse,
    Terminated,
)
from signaling.sip.message import Request, Response, cseq_of, from_tag, max_forwards, to_tag
from signaling.sip.routing import DEFAULT_PORTS, TRANSPORTS, TransportAddress
from signaling.sip.timers import DEFAULT_TIMERS, TimerSettings
from storage.ids import random_hex, random_uuid4
from storage.ports import LEG_TRANSITIONS, NewCall, NewCdr, NewLeg

DEFAULT_MAX_FORWARDS = 70  # RFC 3261 8.1.1.6, for a request that arrived without the header

CALL_COMPLETED_ELSEWHERE = Reason("SIP", 200, "Call completed elsewhere")
NORMAL_CLEARING = Reason("Q.850", 16, "Normal call clearing")
MEDIA_TIMEOUT = Reason("SIP", 408, "media timeout")
NO_ANSWER = Reason("SIP", 480, "No answer")
CALL_TRANSFERRED = Reason("SIP", 200, "Call transferred")
CALLER_CANCELLED = Reason("SIP", 487, "Request Terminated")

_RINGING_STATES = (InviteState.INCOMING, InviteState.EARLY)
_PENDING_UAC_STATES = (InviteState.NULL, InviteState.CALLING, InviteState.EARLY)


class Phase(enum.Enum):
    ROUTING = "routing"
    DIALING = "dialing"
    CONNECTED = "connected"
    ENDED = "ended"


@dataclasses.dataclass(frozen=True, slots=True)
class CallerIdentity:
    """Who is calling: the authenticated user (or None), their account, the trunk it came in on."""

    username: str | None = None
    account_id: uuid.UUID | None = None
    trunk: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class CallEnvironment:
    """What every call of a node shares: configuration, our SIP addresses, timers and pure helpers."""

    config: CallControlConfig
    local_addresses: Mapping[str, LocalAddress]
    to_datetime: Callable[[float], dt.datetime] = lambda now: dt.datetime.fromtimestamp(now, dt.UTC)
    timers: TimerSettings = DEFAULT_TIMERS
    new_id: Callable[[], uuid.UUID] = random_uuid4  # no getrandom system call per id (storage/ids.py)
    new_token: Callable[[], str] = lambda: random_hex(16)

    def local_address(self, transport: str) -> LocalAddress:
        """Our address for requests over ``transport``. A transport without a listener of its own (WS/WSS
        ride on the HTTP server; a TCP flow a client opened) keeps the first listener's host and port but
        names the transport the request really goes over, as its Via must (RFC 3261 §18.1.1, RFC 7118)."""
        transport = transport.lower()
        found = self.local_addresses.get(transport)
        if found is not None:
            return found
        base = self.local_addresses.get("udp") or next(iter(self.local_addresses.values()))
        return LocalAddress(transport.upper(), base.host, base.port)

    def contact(self, address: LocalAddress) -> str:
        transport = address.transport.lower()
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:{address.host}:{address.port}{suffix}>"


@dataclasses.dataclass(eq=False)
class Leg:
    leg_id: uuid.UUID
    is_caller: bool
    target: str
    local_address: LocalAddress
    flow: TransportAddress | None
    session: InviteSession | None = None
    endpoint: LocalMedia | None = None
    endpoint_pending: bool = False
    endpoint_destroyed: bool = False
    db_state: str = "initiated"
    dial: Dial | None = None
    trunk: Trunk | None = None
    request_uri: str = ""
    auth_tried: bool = False
    closed: bool = False
    attempt_recorded: bool = False
    cancel_result: str | None = None
    offering: bool = False
    pending_direction: Direction | None = None
    remote_dir: Direction = Direction.SENDRECV
    local_dir: Direction = Direction.SENDRECV
    configured: bool = False
    final_status: int | None = None
    # RFC 3263 failover: the addresses still to try for this contact if this leg's INVITE fails; why
    # it failed without a response (Timer B, a transport error), if it did; whether any 1xx beyond 100
    # came back (a callee that answered at all is not failed over).
    failover: tuple[TransportAddress, ...] = ()
    no_response: str | None = None
    provisional: bool = False

    @property
    def endpoint_id(self) -> str | None:
        return self.endpoint.endpoint_id if self.endpoint is not None else None

    @property
    def on_hold(self) -> bool:
        return self.local_dir is not Direction.SENDRECV or self.remote_dir is not Direction.SENDRECV


@dataclasses.dataclass(eq=False)
class Transfer:
    transferor: Leg
    party: Leg
    target: str
    step: int
    transferor_gone: bool = False


@dataclasses.dataclass(eq=False)
class Dial:
    """One routing step ringing contacts for ``party`` (the caller, or who stays in a transfer)."""

    step: int
    party: Leg
    route: RouteToContacts
    deadline: float
    transfer: Transfer | None = None
    legs: list[Leg] = dataclasses.field(default_factory=list)
    winner: Leg | None = None
    early_leg: Leg | None = None
    failures: list[int] = dataclasses.field(default_factory=list)
    done: bool = False


def result_for_status(status: int) -> str:
    """The ``call_routing.result`` of an attempt that ended with ``status``."""
    if 200 <= status < 300:
        return "answered"
    return {
        404: "not_found",
        604: "not_found",
        408: "no_answer",
        480: "unavailable",
        486: "busy",
        600: "busy",
        487: "cancelled",
        488: "incompatible",
        606: "incompatible",
        603: "declined",
        401: "auth_failed",
        407: "auth_failed",
    }.get(status, "failed" if status >= 500 and status < 600 else "rejected")


def cause_for_status(status: int) -> str:
    """``termination_cause`` of a call that failed with ``status`` towards the caller."""
    return {
        404: "not_found",
        480: "no_answer_or_unavailable",
        408: "no_answer",
        486: "busy",
        600: "busy",
        487: "cancelled",
        488: "no_common_codec",
        603: "declined",
        403: "forbidden",
    }.get(status, "failed")


def caller_status(failures: Iterable[int]) -> int:
    """RFC 3261 §16.7-style choice of what the caller hears when every fork failed."""
    codes = [code for code in failures if code >= 300]
    if not codes:
        return 480
    six = [code for code in codes if code >= 600]
    if six:
        return six[0]
    for preferred in (486, 488, 404, 480, 408):
        if preferred in codes:
            return preferred
    best = min(codes, key=lambda code: (code // 100 == 5, code))
    if best in (401, 407):
        return 403  # the trunk refused our credentials: not the caller's business to authenticate
    if best == 503:
        return 500  # §16.7: a 503 downstream must not make the caller think WE are unavailable
    return best


def _strip_tag(value: str) -> str:
    if ">" in value:
        return value[: value.index(">") + 1]
    return value.split(";", 1)[0]


class Call:
    def __init__(
        self,
        invite: Request,
        *,
        transaction: object,
        source: TransportAddress,
        now: float,
        caller: CallerIdentity,
        env: CallEnvironment,
    ) -> None:
        self.env = env
        self.config = env.config
        self.caller = caller
        self.call_id = env.new_id()
        self.correlation_id = env.new_id()
        self.sip_call_id = invite.headers.get("Call-ID") or ""
        # Every leg we start for this call carries the caller's Max-Forwards less one (RFC 3261 16.6
        # step 3, kept across the B2BUA): a call routed back to us by a trunk loses a hop each time
        # round and ends in 483, instead of looping for ever as a fresh 70 would.
        received = max_forwards(invite)
        self.max_forwards = DEFAULT_MAX_FORWARDS if received is None else max(received - 1, 0)
        self.started_at = now
        self.answered_at: float | None = None
        self.phase = Phase.ROUTING
        self.ended = False
        self.end_cause: str | None = None
        self.end_status: int | None = None
        self.legs: dict[uuid.UUID, Leg] = {}
        self.bridge: list[Leg] = []
        self.dials: list[Dial] = []
        self.transfer: Transfer | None = None
        self._actions: list[Action] = []
        self._step = 0
        self._pending_route: tuple[int, Route] | None = None
        self._connected: tuple[str, str] | None = None
        self._echo = False
        self._a_ringing = False
        self._cdr_direction = "inbound" if caller.trunk else "internal"
        self.from_uri = _strip_tag(invite.headers.get("From") or "")[:2048]
        self.to_uri = _strip_tag(invite.headers.get("To") or "")[:2048]
        self.request_uri = invite.uri

        transport = source.transport
        address = env.local_address(transport)
        record_routed = bool(invite.headers.getlist("Record-Route"))
        # Requests to the caller go back where its INVITE came from (its flow, or its NAT binding),
        # unless a proxy record-routed the call: then the route set decides.
        flow = None if record_routed and source.connection_id is None else source
        self.a = self._new_leg(
            is_caller=True, target=f"{source.host}:{source.port}", address=address, flow=flow
        )
        session = InviteSession.create_uas(
            invite,
            local_address=address,
            local_contact=env.contact(address),
            transaction=transaction,
            retransmit_2xx=False,
            timers=env.timers,
            answerer=self._answerer(self.a),
        )
        self.a.session = session
        self._a_offer: SessionDescription | None = None
        if invite.body and session.negotiator.pending_offer is not None:
            self._a_offer = session.negotiator.pending_offer

        user = invite.uri.user or ""
        direction = self._cdr_direction
        if direction == "internal" and self.config.dials_out(user):
            direction = "outbound"
        self._persist(
            RecordCallStart(
                NewCall(
                    correlation_id=self.correlation_id,
                    direction=direction,
                    from_uri=self.from_uri or "unknown",
                    to_uri=self.to_uri or str(invite.uri),
                    call_id=self.call_id,
                    sip_call_id=self.sip_call_id[:255] or None,
                    initiator_account_id=caller.account_id,
                    started_at=env.to_datetime(now),
                )
            )
        )
        self._record_leg(self.a, "inbound", caller.account_id, "pstn" if caller.trunk else None)
        if session.terminated:  # 400/420/421 answered by the session itself
            self._pump(self.a, now)
            return
        if self._a_offer is not None:
            try:
                check_offer(self._a_offer, self.config.codecs)
            except NoCommonCodecError:
                self._end_call("no_common_codec", 488, "system", now, a_status=488)
                return
        self._create_endpoint(self.a)
        self._step = 1
        self._actions.append(
            ResolveRoute(
                1,
                RouteQuery(
                    user=user,
                    host=invite.uri.host,
                    caller_account_id=caller.account_id,
                    from_trunk=caller.trunk,
                ),
            )
        )
        self._pump(self.a, now)

    # ================================================================== I/O surface

    def actions(self) -> list[Action]:
        out, self._actions = self._actions, []
        return out

    @property
    def finished(self) -> bool:
        """Ended, and nothing left to do: every leg closed, every endpoint created is destroyed."""
        return self.ended and all(
            leg.closed and not leg.endpoint_pending and (leg.endpoint is None or leg.endpoint_destroyed)
            for leg in self.legs.values()
        )

    def release(self) -> None:
        """Break the reference cycles of a finished call, so that its objects go when the last reference
        does instead of waiting for a garbage collection (~175 objects a call: every young collection
        walks them, and a B2BUA at hundreds of calls a second pays for that): each session's answerer
        closes over the call and its leg, and a leg and the dial that placed it point at each other."""
        for leg in self.legs.values():
            if leg.session is not None:
                leg.session.answerer = None
            leg.dial = None

    def sip_call_ids(self) -> set[str]:
        return {leg.session.call_id for leg in self.legs.values() if leg.session is not None}

    def leg_for_endpoint(self, endpoint_id: str) -> Leg | None:
        return next((leg for leg in self.legs.values() if leg.endpoint_id == endpoint_id), None)

    def get_timer(self) -> float | None:
        deadlines = [
            deadline
            for leg in self.legs.values()
            if leg.session is not None and (deadline := leg.session.get_timer()) is not None
        ]
        deadlines += [dial.deadline for dial in self.dials if not dial.done]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        for leg in list(self.legs.values()):
            session = leg.session
            if session is not None and (deadline := session.get_timer()) is not None and deadline <= now:
                session.handle_timer(now)
                self._pump(leg, now)
        for dial in list(self.dials):
            if not dial.done and dial.deadline <= now:
                self._dial_timeout(dial, now)

    def handle_request(self, request: Request, transaction: object | None, now: float) -> bool:
        """An in-dialog request (or an ACK) for one of our legs; False when no leg matches."""
        leg = self._leg_for(request.headers.get("Call-ID"), to_tag(request))
        if leg is None or leg.session is None:
            return False
        leg.session.receive_request(request, now, transaction=transaction)
        self._pump(leg, now)
        return True

    def handle_cancel(self, cancel: Request, transaction: object | None, now: float) -> None:
        session = self.a.session
        if session is None:
            return
        session.receive_cancel(cancel, now, transaction=transaction, respond_to_cancel=False)
        self._pump(self.a, now)

    def handle_response(self, response: Response, now: float) -> bool:
        leg = self._leg_for(response.headers.get("Call-ID"), from_tag(response), local_tag_only=True)
        if leg is None or leg.session is None:
            return False
        if self._retry_with_credentials(leg, response, now):
            return True
        leg.session.receive_response(response, now)
        self._pump(leg, now)
        return True

    def request_failed(
        self, leg_id: uuid.UUID, method: str, cseq: int, now: float, status: int = 408
    ) -> None:
        leg = self.legs.get(leg_id)
        if leg is None or leg.session is None:
            return
        session = leg.session
        if (
            method == "INVITE"
            and not leg.is_caller
            and session.state is InviteState.CALLING
            and session.invite is not None
            and cseq_of(session.invite).sequence == cseq
        ):
            # The session turns this into a 408/503 like a peer's; only here do we know that no
            # response came at all, which (unlike a peer's 408) sends the INVITE to the next address.
            leg.no_response = "timeout" if status == 408 else "transport error"
        session.request_failed(method, cseq, now, status)
        self._pump(leg, now)

    def handle_route(self, step: int, route: Route, now: float) -> None:
        if self.ended:
            return
        if step == 1 and self.a.endpoint is None:
            self._pending_route = (step, route)  # placed once the caller's endpoint exists
            return
        if self.transfer is not None and step == self.transfer.step:
            self._route_transfer(self.transfer, route, now)
        elif step == 1:
            self._route_caller(route, now)

    def handle_endpoint(
        self, leg_id: uuid.UUID, local: LocalMedia | None, now: float, *, error: str | None = None
    ) -> None:
        leg = self.legs.get(leg_id)
        if leg is None:
            return
        leg.endpoint_pending = False
        if local is not None:
            leg.endpoint = local
        if self.ended or leg.closed:
            self._destroy_endpoint(leg)
            return
        if local is None:
            if leg.is_caller:
                self._end_call("media_unavailable", 503, "system", now, a_status=503)
            else:
                self._fail_unstarted_leg(leg, 503, now)
            return
        if leg.is_caller:
            if self._pending_route is not None:
                step, route = self._pending_route
                self._pending_route = None
                self.handle_route(step, route, now)
        else:
            self._send_invite(leg, now)

    def handle_media_event(self, event: MediaEvent, now: float) -> None:
        if self.ended:
            return
        endpoint_id = getattr(event, "endpoint_id", None)
        leg = self.leg_for_endpoint(endpoint_id) if isinstance(endpoint_id, str) else None
        if leg is None:
            return
        if isinstance(event, MediaTimeout):
            if leg not in self.bridge or any(member.on_hold for member in self.bridge):
                return
            self._end_call("media_timeout", 408, "system", now, reason=MEDIA_TIMEOUT)
        elif isinstance(event, DtmfReceived):
            pass  # RFC 4733 digits are relayed by the media plane itself

    # ================================================================== legs and their sessions

    def _new_leg(
        self, *, is_caller: bool, target: str, address: LocalAddress, flow: TransportAddress | None
    ) -> Leg:
        leg = Leg(self.env.new_id(), is_caller, target, address, flow)
        self.legs[leg.leg_id] = leg
        return leg

    def _leg_for(self, call_id: str | None, tag: str | None, *, local_tag_only: bool = False) -> Leg | None:
        if call_id is None:
            return None
        for leg in self.legs.values():
            session = leg.session
            if session is None or session.call_id != call_id:
                continue
            if tag == session.local_tag or (tag is None and not local_tag_only and leg.is_caller):
                return leg
        return None

    def _answerer(self, leg: Leg) -> Callable[[SessionDescription], SessionDescription]:
        def answer(offer: SessionDescription) -> SessionDescription:
            if leg.endpoint is None:
                raise NoCommonCodecError("no media endpoint yet")
            return build_answer(offer, leg.endpoint, self.config.codecs, self._session_id(leg))

        return answer

    @staticmethod
    def _session_id(leg: Leg) -> str:
        return str(leg.leg_id.int % 10**12)

    def _pump(self, leg: Leg, now: float) -> None:
        """Move what ``leg``'s session wants to send into actions and react to its events."""
        session = leg.session
        if session is None:
            return
        while True:
            outgoing = session.messages_to_send()
            for message in outgoing:
                self._actions.append(SendSip(leg.leg_id, message, self._destination(leg, message)))
            event = session.next_event()
            if event is None and not outgoing:
                return
            if event is not None:
                self._on_session_event(leg, event, now)

    def _destination(self, leg: Leg, message: Outgoing) -> TransportAddress | None:
        if isinstance(message, SendResponse):
            return None
        if leg.flow is not None:
            return leg.flow
        hop = message.next_hop  # type: ignore[attr-defined]
        transport = (hop.parameters.get("transport") or "udp").lower()
        if transport not in TRANSPORTS:
            transport = "udp"
        return TransportAddress(transport, hop.host.strip("[]"), hop.port or DEFAULT_PORTS[transport])  # type: ignore[arg-type]

    def _on_session_event(self, leg: Leg, event: InviteEvent, now: float) -> None:
        if isinstance(event, MediaUpdate):
            self._on_media_update(leg, event, now)
        elif isinstance(event, Ringing):
            self._on_ringing(leg, now)
        elif isinstance(event, EarlyMedia):
            self._on_early_media(leg, now)
        elif isinstance(event, Answered):
            self._on_answered(leg, now)
        elif isinstance(event, Terminated):
            self._on_terminated(leg, event, now)
        elif isinstance(event, InDialogRequest):
            self._on_in_dialog_request(leg, event, now)
        elif isinstance(event, OfferRejected):
            leg.offering = False
            self._retry_pending_direction(leg, now)

    # ================================================================== routing and dialing

    def _route_caller(self, route: Route, now: float) -> None:
        if isinstance(route, RouteReject):
            self._record_routing(1, route.target, route.result, route.status, None, now)
            self._end_call(cause_for_status(route.status), route.status, "system", now, a_status=route.status)
        elif isinstance(route, RouteEcho):
            self._record_routing(1, route.target, "answered", 200, self.a.leg_id, now)
            self._echo = True
            self.bridge = [self.a]
            self._answer_caller(self.a, now)
            if self.a.endpoint is not None and not self.ended:
                self._actions.append(EchoEndpoint(self.a.endpoint.endpoint_id))
        elif isinstance(route, RouteToContacts):
            if route.trunk is not None:
                self._cdr_direction = "outbound"
            self.phase = Phase.DIALING
            self._start_dial(1, self.a, route, None, now)

    def _start_dial(
        self, step: int, party: Leg, route: RouteToContacts, transfer: Transfer | None, now: float
    ) -> Dial:
        dial = Dial(step, party, route, now + self.config.no_answer_timeout, transfer)
        self.dials.append(dial)
        for contact in route.contacts[: self.config.max_forks]:
            self._add_dial_leg(dial, contact.uri, contact.flow, contact.failover)
        if not dial.legs:
            self._dial_failed(dial, now, 480)
        return dial

    def _add_dial_leg(
        self,
        dial: Dial,
        uri: str,
        flow: TransportAddress | None,
        failover: tuple[TransportAddress, ...],
    ) -> Leg:
        """A B leg of ``dial`` to ``uri`` over ``flow``; its INVITE goes once its endpoint exists."""
        route = dial.route
        transport = flow.transport if flow is not None else _uri_transport(uri)
        leg = self._new_leg(
            is_caller=False,
            target=_attempt_target(route.trunk, uri, flow)[:2048],
            address=self.env.local_address(transport),
            flow=flow,
        )
        leg.dial = dial
        leg.trunk = route.trunk
        leg.request_uri = uri
        leg.failover = failover
        dial.legs.append(leg)
        leg_type = "webrtc" if transport in ("ws", "wss") else route.leg_type
        self._record_leg(leg, "outbound", route.account_id, leg_type)
        self._create_endpoint(leg)
        return leg

    def _failover_reason(self, leg: Leg, status: int) -> str | None:
        """Why ``leg``'s INVITE may go on to the next address (RFC 3263 §4.3, RFC 3261 §16.7), or None:
        no response at all, a transport error, or a 503 from a callee that had not even rung. A peer's
        own 408, any other 4xx-6xx, and anything after a 1xx beyond 100 are the callee's answer."""
        if not leg.failover or leg.cancel_result is not None or leg.provisional:
            return None
        if leg.no_response is not None:
            return leg.no_response
        return "503" if status == 503 else None

    def _fail_over(self, leg: Leg, dial: Dial, reason: str, now: float) -> None:
        """Send the caller's INVITE again to the next address of the same contact: a new leg (its own
        client transaction, branch, Call-ID and From tag, as a parallel fork gets; its own endpoint
        and call_legs row), recorded as its own routing attempt in the same step."""
        flow, *rest = leg.failover
        leg.failover = ()
        self._add_dial_leg(dial, leg.request_uri, flow, tuple(rest))
        trunk = leg.trunk
        if trunk is not None and leg.flow is not None:
            failover = TrunkFailover(trunk.name, leg.flow.host, reason, flow.host)
            self._actions.append(ReportTrunkFailover(failover))

    def _send_invite(self, leg: Leg, now: float) -> None:
        dial = leg.dial
        assert dial is not None and leg.endpoint is not None
        if dial.done:
            leg.closed = True
            leg.cancel_result = leg.cancel_result or "cancelled"
            self._record_attempt(leg, leg.cancel_result, None, now)
            self._leg_state(leg, "failed", "not attempted", now)
            self._destroy_endpoint(leg)
            return
        offer = build_offer(leg.endpoint, self.config.codecs, self._session_id(leg))
        self._start_uac(leg, offer, now, headers=())

    def _start_uac(
        self,
        leg: Leg,
        offer: SessionDescription,
        now: float,
        *,
        headers: Iterable[tuple[str, str]],
        call_id: str | None = None,
        cseq: int = 1,
    ) -> None:
        dial = leg.dial
        assert dial is not None
        from_uri = self.from_uri if dial.party.is_caller else self.to_uri
        leg.session = InviteSession.create_uac(
            from_uri=from_uri or f"<sip:anonymous@{self.config.domain}>",
            to_uri=dial.route.to_uri,
            request_uri=leg.request_uri,
            local_address=leg.local_address,
            local_contact=self.env.contact(leg.local_address),
            offer=offer,
            call_id=call_id,
            cseq=cseq,
            headers=headers,
            max_forwards=self.max_forwards,
            timers=self.env.timers,
            answerer=self._answerer(leg),
        )
        leg.session.send_invite(now)
        self._pump(leg, now)

    def _retry_with_credentials(self, leg: Leg, response: Response, now: float) -> bool:
        """Answer a trunk's 401/407 to our INVITE once with digest credentials (a new INVITE)."""
        trunk, session = leg.trunk, leg.session
        if (
            trunk is None
            or trunk.username is None
            or trunk.password is None
            or session is None
            or response.code not in (401, 407)
            or leg.auth_tried
            or session.invite is None
            or cseq_of(response).method != "INVITE"
            or session.state not in (InviteState.CALLING, InviteState.EARLY)
        ):
            return False
        header = "WWW-Authenticate" if response.code == 401 else "Proxy-Authenticate"
        challenge = None
        for value in response.headers.getlist(header):
            try:
                challenge = Challenge.parse(value)
                break
            except ValueError:
                continue
        if challenge is None:
            return False
        try:
            credentials = build_authorization(
                challenge,
                username=trunk.username,
                method="INVITE",
                uri=leg.request_uri,
                cnonce=self.env.new_token(),
                password=trunk.password,
            )
        except ValueError:
            return False
        leg.auth_tried = True
        session.receive_response(response, now)
        session.messages_to_send()
        while session.next_event() is not None:
            pass  # the challenged INVITE is over; its Terminated is not the leg's end
        offer = session.negotiator.local or (
            build_offer(leg.endpoint, self.config.codecs, self._session_id(leg)) if leg.endpoint else None
        )
        if offer is None:
            return False
        last_offer = SessionDescription.parse(session.invite.body) if session.invite.body else offer
        name = "Authorization" if response.code == 401 else "Proxy-Authorization"
        self._start_uac(
            leg,
            last_offer,
            now,
            headers=[(name, credentials.header_value())],
            call_id=session.call_id,
            cseq=cseq_of(session.invite).sequence + 1,
        )
        return True

    def _dial_timeout(self, dial: Dial, now: float) -> None:
        for leg in dial.legs:
            if not leg.closed:
                leg.cancel_result = "no_answer"
        self._dial_failed(dial, now, 480, reason=NO_ANSWER)

    def _dial_failed(
        self, dial: Dial, now: float, status: int | None = None, reason: Reason | None = None
    ) -> None:
        dial.done = True
        for leg in dial.legs:
            if not leg.closed:
                self._hangup(leg, now, reason)
        final = status if status is not None else caller_status(dial.failures)
        if dial.transfer is None:
            ended_by = "callee" if final in (486, 600, 603) else "system"
            self._end_call(cause_for_status(final), final, ended_by, now, a_status=final)
        else:
            self._finish_transfer_failed(dial.transfer, final, now)

    def _fail_unstarted_leg(self, leg: Leg, status: int, now: float) -> None:
        leg.closed = True
        leg.final_status = status
        self._record_attempt(leg, result_for_status(status), status, now)
        self._leg_state(leg, "failed", "media unavailable", now)
        dial = leg.dial
        if dial is not None:
            dial.failures.append(status)
            if not dial.done and all(other.closed for other in dial.legs):
                self._dial_failed(dial, now)

    # ================================================================== session events

    def _on_ringing(self, leg: Leg, now: float) -> None:
        if leg.is_caller:
            return
        leg.provisional = True
        self._leg_state(leg, "early", None, now)
        dial = leg.dial
        if dial is None or dial.done or dial.transfer is not None:
            return
        self._ring_caller(180, now)

    def _ring_caller(self, status: int, now: float, sdp: SessionDescription | None = None) -> None:
        session = self.a.session
        if session is None or session.state not in _RINGING_STATES:
            return
        if status == 180 and self._a_ringing:
            return
        self._a_ringing = True
        session.answer(status, now, sdp=sdp)
        self._leg_state(self.a, "early", None, now)
        self._pump(self.a, now)

    def _on_early_media(self, leg: Leg, now: float) -> None:
        if leg.is_caller:
            return
        leg.provisional = True
        self._leg_state(leg, "early", None, now)
        dial = leg.dial
        if dial is None or dial.done or dial.transfer is not None:
            return
        if not leg.configured or dial.early_leg is not None:
            self._ring_caller(180, now)
            return
        dial.early_leg = leg
        self._ring_caller(183, now, sdp=self._caller_sdp())
        self._connect(self.a, leg)

    def _caller_sdp(self) -> SessionDescription | None:
        endpoint = self.a.endpoint
        if endpoint is None:
            return None
        if self._a_offer is not None:
            return build_answer(self._a_offer, endpoint, self.config.codecs, self._session_id(self.a))
        return build_offer(endpoint, self.config.codecs, self._session_id(self.a))

    def _answer_caller(self, answering: Leg, now: float) -> None:
        session = self.a.session
        if session is None or session.state not in _RINGING_STATES:
            return
        self.answered_at = now
        self.phase = Phase.CONNECTED
        self._persist(RecordAnswer(self.call_id, answering.leg_id, self._at(now)))
        session.answer(200, now, sdp=self._caller_sdp())
        self._pump(self.a, now)

    def _on_answered(self, leg: Leg, now: float) -> None:
        self._leg_state(leg, "confirmed", None, now)
        if leg.is_caller:
            return
        dial = leg.dial
        if dial is None or dial.done or self.ended:
            # Answered after we gave up on it (timeout, cancel, another fork won): hang it up.
            self._record_attempt(leg, leg.cancel_result or "cancelled", 200, now)
            self._hangup(leg, now, CALL_COMPLETED_ELSEWHERE)
            return
        dial.done = True
        dial.winner = leg
        self._record_attempt(leg, "answered", 200, now)
        for other in dial.legs:
            if other is not leg and not other.closed:
                other.cancel_result = "cancelled"
                self._hangup(other, now, CALL_COMPLETED_ELSEWHERE)
        if dial.transfer is None:
            self.bridge = [self.a, leg]
            self._answer_caller(leg, now)
            self._connect(self.a, leg)
        else:
            self._complete_transfer(dial.transfer, leg, now)

    def _on_media_update(self, leg: Leg, event: MediaUpdate, now: float) -> None:
        ours_was_offer = leg.offering
        leg.offering = False
        new_remote = remote_direction(event.remote)
        changed = new_remote is not leg.remote_dir
        leg.remote_dir = new_remote
        leg.local_dir = local_direction(event.local)
        params = stream_params(event.local, event.remote)
        if params is not None and leg.endpoint is not None:
            leg.configured = True
            self._actions.append(ConfigureEndpoint(leg.endpoint.endpoint_id, params))
        if self._connected is None and len(self.bridge) == 2 and leg in self.bridge:
            self._connect(self.bridge[0], self.bridge[1])
        if (
            changed
            and not ours_was_offer
            and not event.early
            and self.phase is Phase.CONNECTED
            and len(self.bridge) == 2
            and leg in self.bridge
        ):
            peer = self.bridge[1] if self.bridge[0] is leg else self.bridge[0]
            self._offer_direction(peer, new_remote, now)
        self._retry_pending_direction(leg, now)

    def _offer_direction(self, leg: Leg, direction: Direction, now: float) -> None:
        """Pass a hold/resume across: re-INVITE ``leg`` with our SDP declaring ``direction``."""
        session = leg.session
        if session is None or session.negotiator.local is None or session.state is not InviteState.CONFIRMED:
            return
        try:
            session.reinvite(now, with_direction(session.negotiator.local, direction))
        except LocalProtocolError:
            leg.pending_direction = direction  # a re-INVITE is in progress: send ours after it
            return
        leg.pending_direction = None
        leg.offering = True
        self._pump(leg, now)

    def _retry_pending_direction(self, leg: Leg, now: float) -> None:
        if leg.pending_direction is not None and not leg.offering and not self.ended:
            direction, leg.pending_direction = leg.pending_direction, None
            if direction is not leg.local_dir:
                self._offer_direction(leg, direction, now)

    def _on_terminated(self, leg: Leg, event: Terminated, now: float) -> None:
        leg.closed = True
        leg.final_status = event.status_code
        confirmed = leg.db_state == "confirmed"
        self._leg_state(leg, "terminated" if confirmed else "failed", event.reason[:255] or None, now)
        if self.ended:
            self._record_attempt(leg, leg.cancel_result or "cancelled", event.status_code, now)
            self._destroy_endpoint(leg)
            return
        if leg.is_caller and not self.bridge:
            # The caller gave up (CANCEL) or the INVITE failed before any answer.
            cause = "cancelled" if event.status_code == 487 else cause_for_status(event.status_code)
            self._end_call(cause, event.status_code, "caller", now, reason=event.cause or CALLER_CANCELLED)
            return
        dial = leg.dial
        if dial is not None and dial.winner is not leg:
            self._destroy_endpoint(leg)
            result = leg.cancel_result or result_for_status(event.status_code)
            self._record_attempt(leg, result, event.status_code, now)
            if leg.cancel_result is None:
                # Kept for every address tried: once all have failed, the caller hears what the
                # §16.7 choice over them all gives (a timeout and a 503 give 408, as one timeout would).
                dial.failures.append(event.status_code)
                reason = None if dial.done else self._failover_reason(leg, event.status_code)
                if reason is not None:
                    self._fail_over(leg, dial, reason, now)
            if not dial.done and all(other.closed for other in dial.legs):
                self._dial_failed(dial, now)
            return
        if leg in self.bridge:
            self._bridged_leg_gone(leg, event, now)
        else:
            self._destroy_endpoint(leg)

    def _bridged_leg_gone(self, leg: Leg, event: Terminated, now: float) -> None:
        transfer = self.transfer
        if transfer is not None and leg is transfer.transferor:
            transfer.transferor_gone = True  # the transferor hung up: the transfer goes on without it
            self.bridge.remove(leg)
            self._disconnect()
            self._destroy_endpoint(leg)
            return
        if event.by_remote:
            ended_by = "caller" if leg.is_caller else "callee"
            cause = "normal_clearing" if event.status_code == 200 else cause_for_status(event.status_code)
        else:
            ended_by, cause = "system", "timeout" if event.status_code == 408 else "failed"
        self._end_call(cause, 200, ended_by, now, reason=event.cause or NORMAL_CLEARING)

    def _on_in_dialog_request(self, leg: Leg, event: InDialogRequest, now: float) -> None:
        request, transaction = event.request, event.transaction
        session = leg.session
        assert session is not None
        method = request.method
        if method == "INFO":
            self._on_info(leg, request, transaction, now)
        elif method == "REFER":
            self._on_refer(leg, request, transaction, now)
        elif method == "NOTIFY":
            session.respond(request, transaction, 481)  # we never subscribe to anything
        else:
            session.respond(request, transaction, 405, headers=[("Allow", ALLOWED_METHODS)])
        self._pump(leg, now)

    def _on_info(self, leg: Leg, request: Request, transaction: object | None, now: float) -> None:
        session = leg.session
        assert session is not None
        try:
            digit = parse_dtmf_info(request)
        except ValueError:
            session.respond(request, transaction, 400)
            return
        if digit is None:
            status = 415 if request.body else 200
            session.respond(request, transaction, status)
            return
        session.respond(request, transaction, 200)
        peer = self._peer_of(leg)
        if peer is not None and peer.endpoint is not None:
            self._actions.append(SendDtmf(peer.endpoint.endpoint_id, digit.digit, digit.duration_ms))

    def _peer_of(self, leg: Leg) -> Leg | None:
        if len(self.bridge) == 2 and leg in self.bridge:
            return self.bridge[1] if self.bridge[0] is leg else self.bridge[0]
        return None

    # ================================================================== transfer (REFER, RFC 3515)

    def _on_refer(self, leg: Leg, request: Request, transaction: object | None, now: float) -> None:
        session = leg.session
        assert session is not None
        peer = self._peer_of(leg)
        if peer is None or self.phase is not Phase.CONNECTED:
            session.respond(request, transaction, 403)
            return
        if self.transfer is not None:
            session.respond(request, transaction, 491)
            return
        try:
            target = refer_target(request)
        except ValueError:
            session.respond(request, transaction, 400)
            return
        session.respond(request, transaction, 202)
        self._step += 1
        self.transfer = Transfer(leg, peer, str(target), self._step)
        self._notify(leg, 100, now)
        self._actions.append(
            ResolveRoute(
                self._step,
                RouteQuery(
                    user=target.user or "",
                    host=target.host,
                    caller_account_id=self.caller.account_id,
                    from_trunk=None,
                ),
            )
        )

    def _notify(self, leg: Leg, status: int, now: float) -> None:
        session = leg.session
        if session is None or session.terminated:
            return
        state = (
            f"active;expires={self.config.notify_expires}" if status < 200 else "terminated;reason=noresource"
        )
        try:
            session.send_request(
                "NOTIFY",
                now,
                body=sipfrag(status),
                content_type=SIPFRAG_TYPE,
                headers=[("Event", "refer"), ("Subscription-State", state)],
            )
        except LocalProtocolError:
            return
        self._pump(leg, now)

    def _route_transfer(self, transfer: Transfer, route: Route, now: float) -> None:
        if isinstance(route, RouteReject):
            self._record_routing(transfer.step, route.target, route.result, route.status, None, now)
            self._finish_transfer_failed(transfer, route.status, now)
        elif isinstance(route, RouteEcho):
            self._record_routing(transfer.step, route.target, "answered", 200, transfer.party.leg_id, now)
            self._disconnect()
            self.bridge = [transfer.party]
            self._echo = True
            if transfer.party.endpoint is not None:
                self._actions.append(EchoEndpoint(transfer.party.endpoint.endpoint_id))
            self._release_transferor(transfer, now)
        elif isinstance(route, RouteToContacts):
            self._start_dial(transfer.step, transfer.party, route, transfer, now)

    def _complete_transfer(self, transfer: Transfer, new_leg: Leg, now: float) -> None:
        party = transfer.party
        self.bridge = [party, new_leg]
        self._connect(party, new_leg)
        if party.local_dir is not Direction.SENDRECV:
            self._offer_direction(party, Direction.SENDRECV, now)  # take the party off hold
        self._release_transferor(transfer, now)

    def _release_transferor(self, transfer: Transfer, now: float) -> None:
        self.transfer = None
        transferor = transfer.transferor
        if transferor in self.bridge:
            self.bridge.remove(transferor)
        self._notify(transferor, 200, now)
        if not transferor.closed:
            self._hangup(transferor, now, CALL_TRANSFERRED)

    def _finish_transfer_failed(self, transfer: Transfer, status: int, now: float) -> None:
        self.transfer = None
        if transfer.transferor_gone:
            self._end_call("transfer_failed", status, "system", now, reason=NORMAL_CLEARING)
            return
        self._notify(transfer.transferor, status, now)

    # ================================================================== media

    def _create_endpoint(self, leg: Leg) -> None:
        leg.endpoint_pending = True
        self._actions.append(CreateEndpoint(leg.leg_id))

    def _connect(self, x: Leg, y: Leg) -> None:
        if x.endpoint is None or y.endpoint is None or not (x.configured and y.configured):
            return
        pair = (x.endpoint.endpoint_id, y.endpoint.endpoint_id)
        if self._connected == pair:
            return
        self._disconnect()
        self._connected = pair
        self._actions.append(ConnectEndpoints(*pair))

    def _disconnect(self) -> None:
        if self._connected is not None:
            self._actions.append(DisconnectEndpoints(*self._connected))
            self._connected = None

    def _destroy_endpoint(self, leg: Leg) -> None:
        if leg.endpoint is None or leg.endpoint_destroyed:
            return
        if self._connected is not None and leg.endpoint.endpoint_id in self._connected:
            self._disconnect()
        leg.endpoint_destroyed = True
        self._actions.append(DestroyEndpoint(leg.endpoint.endpoint_id, leg.leg_id))

    # ================================================================== ending

    def _hangup(self, leg: Leg, now: float, reason: Reason | None, status: int | None = None) -> None:
        session = leg.session
        if session is None:
            if not leg.closed:
                leg.closed = True
                self._record_attempt(leg, leg.cancel_result or "cancelled", None, now)
                self._leg_state(leg, "failed", "not attempted", now)
                self._destroy_endpoint(leg)
            return
        if session.terminated:
            return
        session.end_session(now, status_code=status, reason=reason)
        self._pump(leg, now)

    def _end_call(
        self,
        cause: str,
        status: int | None,
        ended_by: str | None,
        now: float,
        *,
        reason: Reason | None = None,
        a_status: int | None = None,
    ) -> None:
        if self.ended:
            return
        self.ended = True
        self.phase = Phase.ENDED
        self.end_cause, self.end_status = cause, status
        self.transfer = None
        for dial in self.dials:
            dial.done = True
        self._disconnect()
        for leg in list(self.legs.values()):
            if not leg.closed:
                if leg.session is not None and leg.session.state in _PENDING_UAC_STATES and not leg.is_caller:
                    leg.cancel_result = leg.cancel_result or "cancelled"
                self._hangup(leg, now, reason, a_status if leg.is_caller else None)
        for leg in self.legs.values():
            if leg.closed or leg.session is None or leg.session.terminated:
                self._destroy_endpoint(leg)
        at = self._at(now)
        self._persist(RecordEnd(self.call_id, cause[:64], status, ended_by, at))
        answered_at = self._at(self.answered_at) if self.answered_at is not None else None
        self._persist(
            RecordCdr(
                NewCdr(
                    call_id=self.call_id,
                    correlation_id=self.correlation_id,
                    caller=self.from_uri or "unknown",
                    callee=self.to_uri or "unknown",
                    direction=self._cdr_direction,
                    started_at=self._at(self.started_at),
                    ended_at=at,
                    termination_cause=cause[:64],
                    answered_at=answered_at,
                    account_id=self.caller.account_id,
                    sip_status=status,
                )
            )
        )
        for leg in self.legs.values():
            self._destroy_endpoint(leg)

    # ================================================================== persistence helpers

    def _at(self, now: float) -> dt.datetime:
        return self.env.to_datetime(now)

    def _persist(self, action: Action) -> None:
        self._actions.append(action)

    def _record_leg(
        self, leg: Leg, direction: str, account_id: uuid.UUID | None, leg_type: str | None
    ) -> None:
        transport = leg.flow.transport if leg.flow is not None else "udp"
        kind = leg_type or ("webrtc" if transport in ("ws", "wss") else "sip")
        self._persist(
            RecordLeg(
                self.call_id,
                NewLeg(
                    leg_type=kind,
                    direction=direction,
                    remote_address=leg.target[:255] or "unknown",
                    account_id=account_id,
                    sip_call_id=(self.sip_call_id[:255] or None) if leg.is_caller else None,
                    leg_id=leg.leg_id,
                    started_at=self._at(self.started_at),
                ),
            )
        )

    def _leg_state(self, leg: Leg, state: str, reason: str | None, now: float) -> None:
        if state == leg.db_state or state not in LEG_TRANSITIONS[leg.db_state]:
            return  # nothing new (early -> early), or a change the leg's life cycle does not allow
        leg.db_state = state
        self._persist(RecordLegState(leg.leg_id, state, reason, self._at(now)))

    def _record_routing(
        self, step: int, target: str, result: str, status: int | None, leg_id: uuid.UUID | None, now: float
    ) -> None:
        self._persist(
            RecordRouting(
                self.call_id, step, target[:2048] or "unknown", result, status, leg_id, self._at(now)
            )
        )

    def _record_attempt(self, leg: Leg, result: str, status: int | None, now: float) -> None:
        if leg.attempt_recorded or leg.dial is None:
            return
        leg.attempt_recorded = True
        if status is not None and not 100 <= status <= 699:
            status = None
        self._record_routing(leg.dial.step, leg.target, result, status, leg.leg_id, now)


def _attempt_target(trunk: Trunk | None, uri: str, flow: TransportAddress | None) -> str:
    """What a B leg's call_routing row (and call_legs remote address) names: the Request-URI, plus, for a
    trunk whose host name resolved to addresses, the address dialled as ``maddr`` (RFC 3261 §19.1.1):
    each address of one name is then its own attempt, as call_routing's (step, target) key needs."""
    if trunk is None or flow is None or not trunk.host_is_name or flow.host == trunk.host:
        return uri
    host = f"[{flow.host}]" if ":" in flow.host else flow.host
    return f"{uri};maddr={host}"


def _uri_transport(uri: str) -> str:
    try:
        parsed = uri_of(uri)
    except ValueError:
        return "udp"
    transport = (parsed.parameters.get("transport") or "udp").lower()
    return transport if transport in TRANSPORTS else "udp"
