"""The invite session (pjsip's ``inv_*`` usage) on top of :mod:`signaling.sip.dialog` -- sans-IO.

One :class:`InviteSession` per call leg, as UAC (:meth:`InviteSession.create_uac` then
:meth:`~InviteSession.send_invite`) or as UAS (:meth:`InviteSession.create_uas` from the INVITE,
then :meth:`~InviteSession.answer`). States (:class:`InviteState`) move only through
:data:`TRANSITIONS`; a local command the table does not allow raises
:class:`~signaling.sip.errors.LocalProtocolError` naming the role and state. Remote input never
raises: what the peer got wrong is answered (400/420/421/422/481/487/488/491/500) or dropped.

I/O surface (the caller passes the time)::

    session.receive_request(request, now, transaction=token)   # token echoed in SendResponse
    session.receive_response(response, now)
    session.receive_cancel(cancel, now, transaction=..., respond_to_cancel=False)  # endpoint answered
    session.request_failed(method, cseq, now)                  # client transaction timeout/error
    session.messages_to_send() -> list[SendRequest | SendAck | SendResponse]
    session.next_event() -> InviteEvent | None
    session.get_timer() / session.handle_timer(now)

Outputs are for the transaction layer: :class:`SendRequest` starts a client transaction (INVITE,
BYE, CANCEL, PRACK, UPDATE, re-INVITE, INFO...), :class:`SendAck` goes statelessly (ACK for a 2xx),
:class:`SendResponse` goes through the server transaction named by ``transaction``. The session
retransmits what the RFCs give to the transaction user: 2xx to INVITE until the ACK (§13.3.1.4,
T1 doubling to T2, BYE after 64*T1 without ACK), reliable provisional responses until PRACKed
(RFC 3262) and the ACK of a 2xx whenever that 2xx is retransmitted (§13.2.2.4). With
``retransmit_2xx=False`` the 2xx retransmissions are left to a transaction layer that does them
itself (RFC 6026 Accepted state); the 64*T1 ACK deadline still applies.

Offer/answer (RFC 3264, RFC 6337) is tracked by :class:`SdpNegotiator`; the application provides
offers (``sdp=`` on :meth:`~InviteSession.answer`, ``offer=`` on create/re-INVITE/UPDATE) and an
``answerer`` callable that turns a remote offer into our answer (raising
:class:`~signaling.sdp.NoCommonCodecError` for a 488). Every completed exchange emits
:class:`MediaUpdate` with the active local and remote descriptions.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import random
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal

from signaling.sdp import Direction, NoCommonCodecError, OriginTracker, SessionDescription
from signaling.sip.dialog import Dialog, DialogId, DialogState, LocalAddress
from signaling.sip.errors import LocalProtocolError, RemoteProtocolError
from signaling.sip.message import (
    URI,
    Request,
    Response,
    build_cancel,
    build_request,
    build_response,
    cseq_of,
    from_tag,
    new_branch,
    new_call_id,
    new_tag,
    reason_phrase,
    split_header_values,
    to_tag,
)
from signaling.sip.prack import RAck, ReliableProvisionals, rseq_of
from signaling.sip.session_timer import (
    ActiveSessionTimer,
    IntervalTooSmall,
    SessionExpires,
    SessionTimerSettings,
    has_option,
    min_se_of,
    negotiate_as_uas,
    session_expires_of,
)
from signaling.sip.timers import DEFAULT_TIMERS, TimerSettings

__all__ = [
    "TRANSITIONS",
    "Answered",
    "EarlyMedia",
    "GlareRetry",
    "InDialogRequest",
    "InDialogResponse",
    "InviteEvent",
    "InviteSession",
    "InviteState",
    "MediaUpdate",
    "OfferAnswerState",
    "OfferPending",
    "OfferRejected",
    "Outgoing",
    "Reason",
    "RefreshNeeded",
    "Ringing",
    "SdpNegotiator",
    "SendAck",
    "SendRequest",
    "SendResponse",
    "SessionRefreshed",
    "Terminated",
]

Role = Literal["uac", "uas"]
SDP_TYPE = "application/sdp"
ALLOWED_METHODS = "INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, REFER, NOTIFY, MESSAGE"
_APP_METHODS = frozenset(("INFO", "REFER", "NOTIFY", "MESSAGE", "SUBSCRIBE"))
_KNOWN_METHODS = frozenset(
    ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "PRACK", "UPDATE", "REGISTER", "PUBLISH", *_APP_METHODS)
)
_MAX_REMEMBERED_ACKS = 32
_MAX_INVITE_RETRIES = 3


# ============================================================================ states


class InviteState(enum.Enum):
    NULL = "null"
    CALLING = "calling"
    INCOMING = "incoming"
    EARLY = "early"
    CONNECTING = "connecting"
    CONFIRMED = "confirmed"
    DISCONNECTED = "disconnected"


S = InviteState

TRANSITIONS: dict[tuple[Role, InviteState, str], InviteState] = {
    # caller
    ("uac", S.NULL, "send_invite"): S.CALLING,
    ("uac", S.NULL, "abandon"): S.DISCONNECTED,
    ("uac", S.CALLING, "recv_100"): S.CALLING,
    ("uac", S.CALLING, "recv_1xx"): S.EARLY,
    ("uac", S.EARLY, "recv_1xx"): S.EARLY,
    ("uac", S.CALLING, "send_cancel"): S.CALLING,
    ("uac", S.EARLY, "send_cancel"): S.EARLY,
    ("uac", S.CALLING, "retry_invite"): S.CALLING,
    ("uac", S.EARLY, "retry_invite"): S.CALLING,
    ("uac", S.CALLING, "recv_2xx"): S.CONNECTING,
    ("uac", S.EARLY, "recv_2xx"): S.CONNECTING,
    ("uac", S.CONNECTING, "send_ack"): S.CONFIRMED,
    ("uac", S.CALLING, "recv_failure"): S.DISCONNECTED,
    ("uac", S.EARLY, "recv_failure"): S.DISCONNECTED,
    ("uac", S.CALLING, "give_up"): S.DISCONNECTED,
    ("uac", S.EARLY, "give_up"): S.DISCONNECTED,
    ("uac", S.EARLY, "recv_bye"): S.DISCONNECTED,
    # callee
    ("uas", S.NULL, "recv_invite"): S.INCOMING,
    ("uas", S.INCOMING, "send_1xx"): S.EARLY,
    ("uas", S.EARLY, "send_1xx"): S.EARLY,
    ("uas", S.INCOMING, "send_2xx"): S.CONNECTING,
    ("uas", S.EARLY, "send_2xx"): S.CONNECTING,
    ("uas", S.INCOMING, "send_failure"): S.DISCONNECTED,
    ("uas", S.EARLY, "send_failure"): S.DISCONNECTED,
    ("uas", S.INCOMING, "recv_cancel"): S.DISCONNECTED,
    ("uas", S.EARLY, "recv_cancel"): S.DISCONNECTED,
    ("uas", S.INCOMING, "recv_bye"): S.DISCONNECTED,
    ("uas", S.EARLY, "recv_bye"): S.DISCONNECTED,
    ("uas", S.CONNECTING, "recv_ack"): S.CONFIRMED,
    ("uas", S.CONNECTING, "ack_timeout"): S.DISCONNECTED,
    ("uas", S.CONNECTING, "send_bye"): S.DISCONNECTED,
    # both, once the dialog is up
    **{(role, state, "recv_bye"): S.DISCONNECTED
       for role in ("uac", "uas") for state in (S.CONNECTING, S.CONFIRMED)},
    **{(role, S.CONFIRMED, trigger): S.DISCONNECTED for role in ("uac", "uas") for trigger in (
        "send_bye", "session_expired", "dialog_gone")},
    **{(role, S.CONFIRMED, trigger): S.CONFIRMED for role in ("uac", "uas") for trigger in (
        "send_modify", "recv_modify")},
}  # fmt: skip


# ============================================================================ outputs and events


class Outgoing:
    """Marker base class of what the session asks the transaction layer to send."""

    __slots__ = ()


@dataclasses.dataclass(frozen=True, slots=True)
class SendRequest(Outgoing):
    """Start a client transaction for ``request``; resolve ``next_hop`` (RFC 3263) to send it."""

    request: Request
    next_hop: URI


@dataclasses.dataclass(frozen=True, slots=True)
class SendAck(Outgoing):
    """Send the ACK of a 2xx statelessly (no transaction) towards ``next_hop``."""

    request: Request
    next_hop: URI


@dataclasses.dataclass(frozen=True, slots=True)
class SendResponse(Outgoing):
    """Send ``response`` on the server transaction the caller named ``transaction``."""

    response: Response
    transaction: object | None
    retransmission: bool = False


class InviteEvent:
    """Marker base class of invite session events."""

    __slots__ = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Reason:
    """RFC 3326 Reason header value: ``SIP;cause=200;text="Call completed elsewhere"``."""

    protocol: str
    cause: int
    text: str | None = None

    _CAUSE_RE = re.compile(r"cause\s*=\s*([0-9]{1,6})", re.IGNORECASE)
    _TEXT_RE = re.compile(r'text\s*=\s*"((?:[^"\\]|\\.)*)"', re.IGNORECASE)

    @classmethod
    def parse(cls, value: str) -> Reason | None:
        protocol = value.split(";", 1)[0].strip()
        cause = cls._CAUSE_RE.search(value)
        if not protocol or cause is None:
            return None
        text = cls._TEXT_RE.search(value)
        return cls(protocol, int(cause.group(1)), text.group(1) if text else None)

    @classmethod
    def of(cls, message: Request | Response) -> Reason | None:
        for value in message.headers.getlist("Reason"):
            for item in split_header_values(value):
                reason = cls.parse(item)
                if reason is not None:
                    return reason
        return None

    def __str__(self) -> str:
        text = self.text.replace("\\", "\\\\").replace('"', '\\"') if self.text else None
        return f"{self.protocol};cause={self.cause}" + (f';text="{text}"' if text else "")


@dataclasses.dataclass(frozen=True, slots=True)
class Ringing(InviteEvent):
    status_code: int
    dialog_id: DialogId | None


@dataclasses.dataclass(frozen=True, slots=True)
class EarlyMedia(InviteEvent):
    """A 183 (or any 1xx with SDP) arrived; media may flow before the answer."""

    status_code: int
    dialog_id: DialogId | None


@dataclasses.dataclass(frozen=True, slots=True)
class Answered(InviteEvent):
    """The session reached CONFIRMED (UAC: 2xx received and ACKed; UAS: ACK received)."""

    dialog_id: DialogId


@dataclasses.dataclass(frozen=True, slots=True)
class MediaUpdate(InviteEvent):
    """An offer/answer exchange completed: ``local`` and ``remote`` are the active descriptions."""

    local: SessionDescription
    remote: SessionDescription
    early: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class OfferRejected(InviteEvent):
    """Our re-INVITE/UPDATE offer failed; the previous media session stays active."""

    method: str
    status_code: int


@dataclasses.dataclass(frozen=True, slots=True)
class GlareRetry(InviteEvent):
    """Our re-INVITE/UPDATE met a 491; it will be sent again after ``delay`` seconds (§14.1)."""

    method: str
    delay: float


@dataclasses.dataclass(frozen=True, slots=True)
class RefreshNeeded(InviteEvent):
    """We are the session refresher and the refresh is due (``auto_refresh=False``): call refresh()."""

    interval: int


@dataclasses.dataclass(frozen=True, slots=True)
class SessionRefreshed(InviteEvent):
    """A session timer was (re)negotiated; ``we_refresh`` says who refreshes next."""

    interval: int
    we_refresh: bool


@dataclasses.dataclass(frozen=True, slots=True)
class InDialogRequest(InviteEvent):
    """A request the application answers (INFO, REFER, NOTIFY, MESSAGE) via ``session.respond``."""

    request: Request
    transaction: object | None


@dataclasses.dataclass(frozen=True, slots=True)
class InDialogResponse(InviteEvent):
    """The final response to a request the application sent with ``session.send_request``."""

    method: str
    response: Response


@dataclasses.dataclass(frozen=True, slots=True)
class Terminated(InviteEvent):
    """The session is over. ``status_code`` is the SIP cause (200 for a BYE, 487 cancelled, the
    final failure code...); ``cause`` is the RFC 3326 Reason the peer (or we) gave, if any."""

    reason: str
    status_code: int
    by_remote: bool
    cause: Reason | None = None


# ============================================================================ offer/answer


class OfferAnswerState(enum.Enum):
    IDLE = "idle"
    LOCAL_OFFER = "local-offer"
    REMOTE_OFFER = "remote-offer"


class OfferPending(RemoteProtocolError):
    """The peer offered while an offer is outstanding: 491 (glare) or 500 (we owe the answer)."""


class SdpNegotiator:
    """Who offered what (RFC 3264, RFC 6337); pjsip's negotiator without the SDP building.

    ``IDLE``: no offer outstanding, ``local``/``remote`` are the active descriptions (``None``
    before the first exchange); ``LOCAL_OFFER``: we wait for an answer; ``REMOTE_OFFER``: we owe one.
    """

    def __init__(self) -> None:
        self.state = OfferAnswerState.IDLE
        self.local: SessionDescription | None = None
        self.remote: SessionDescription | None = None
        self.pending_offer: SessionDescription | None = None

    @property
    def established(self) -> bool:
        return self.local is not None and self.remote is not None

    def send_offer(self, offer: SessionDescription) -> None:
        if self.state is not OfferAnswerState.IDLE:
            raise LocalProtocolError(f"cannot offer: offer/answer state is {self.state.value}")
        self.state = OfferAnswerState.LOCAL_OFFER
        self.pending_offer = offer

    def receive_offer(self, offer: SessionDescription) -> None:
        if self.state is OfferAnswerState.LOCAL_OFFER:
            raise OfferPending("an offer of ours is outstanding", 491)
        if self.state is OfferAnswerState.REMOTE_OFFER:
            raise OfferPending("the previous offer is not answered yet", 500)
        self.state = OfferAnswerState.REMOTE_OFFER
        self.pending_offer = offer

    def receive_answer(self, answer: SessionDescription) -> None:
        if self.state is not OfferAnswerState.LOCAL_OFFER or self.pending_offer is None:
            raise RemoteProtocolError("an answer arrived but no offer of ours is outstanding", None)
        self.local, self.remote = self.pending_offer, answer
        self._settle()

    def send_answer(self, answer: SessionDescription) -> None:
        if self.state is not OfferAnswerState.REMOTE_OFFER or self.pending_offer is None:
            raise LocalProtocolError("cannot answer: no remote offer is outstanding")
        self.local, self.remote = answer, self.pending_offer
        self._settle()

    def replace_remote(self, answer: SessionDescription) -> None:
        """A later answer to the same offer (another fork's 2xx) supersedes an early one."""
        self.remote = answer

    def rollback(self) -> None:
        """The request carrying the outstanding offer failed: the previous session stays."""
        self._settle()

    def _settle(self) -> None:
        self.state = OfferAnswerState.IDLE
        self.pending_offer = None


# ============================================================================ bookkeeping


@dataclasses.dataclass(slots=True)
class _ClientRequest:
    request: Request
    purpose: str  # invite, reinvite, update, bye, cancel, prack, app
    dialog: Dialog | None
    offered: bool = False
    refresh: bool = False
    retries: int = 0


@dataclasses.dataclass(slots=True)
class _Pending2xx:
    response: Response
    transaction: object | None
    cseq: int
    interval: float
    next_send: float | None
    give_up_at: float
    initial: bool


@dataclasses.dataclass(slots=True)
class _GlareRetry:
    method: str
    offer: SessionDescription | None
    at: float


def _has_sdp(message: Request | Response) -> bool:
    if not message.body:
        return False
    content_type = (message.headers.get("Content-Type") or SDP_TYPE).split(";", 1)[0].strip().lower()
    return content_type == SDP_TYPE


def _copy_sdp(sdp: SessionDescription) -> SessionDescription:
    # A structural deep copy: the session owns what it stamps and sends, and the caller may keep
    # changing its object. (It was a render/parse round trip, ~2 parses per call for nothing new: the
    # SDP given here is built by our own offer/answer code from parsed descriptions.)
    return sdp.copy()


def _option_values(message: Request | Response, header: str) -> list[str]:
    return [
        item.strip().lower()
        for value in message.headers.getlist(header)
        for item in split_header_values(value)
        if item.strip()
    ]


# ============================================================================ the session


class InviteSession:
    """One INVITE-initiated session, UAC or UAS. See the module docstring."""

    def __init__(
        self,
        role: Role,
        *,
        local_address: LocalAddress,
        local_contact: str,
        answerer: Callable[[SessionDescription], SessionDescription] | None = None,
        timers: TimerSettings = DEFAULT_TIMERS,
        session_timer: SessionTimerSettings | None = None,
        support_100rel: bool = True,
        require_100rel: bool = False,
        retransmit_2xx: bool = True,
        auto_refresh: bool = True,
        max_early_dialogs: int = 16,
        rng: Callable[[], float] | None = None,
    ) -> None:
        self.role: Role = role
        self.state = InviteState.NULL
        self.local_address = local_address
        self.local_contact = local_contact
        self.answerer = answerer
        self.timers = timers
        self.session_timer_settings = session_timer
        self.support_100rel = support_100rel or require_100rel
        self.require_100rel = require_100rel
        self.retransmit_2xx = retransmit_2xx
        self.auto_refresh = auto_refresh
        self.max_early_dialogs = max_early_dialogs
        # The module's generator unless a test injects one: a Random per session seeds itself from
        # os.urandom (~2.5 KB of state), a cost every call paid twice for a few jitter values.
        self._random = rng or random.random
        self.negotiator = SdpNegotiator()
        self.dialog: Dialog | None = None
        self.early_dialogs: dict[str, Dialog] = {}
        self.invite: Request | None = None
        self.call_id = ""
        self.local_tag = ""
        self.session_timer: ActiveSessionTimer | None = None
        self.peer_allows: frozenset[str] = frozenset()
        self._origin: OriginTracker | None = None
        self._last_local: SessionDescription | None = None
        self._events: collections.deque[InviteEvent] = collections.deque()
        self._outgoing: list[Outgoing] = []
        self._timers: dict[str, float] = {}
        self._client: dict[tuple[int, str], _ClientRequest] = {}
        self._acks: collections.OrderedDict[tuple[str, int], Request] = collections.OrderedDict()
        # UAC
        self._invite_headers: list[tuple[str, str]] = []
        self._provisional_seen = False
        self._cancel_wanted: Reason | None = None
        self._cancel_sent = False
        self._last_rseq: dict[str, int] = {}
        self._answer_is_provisional = False
        # UAS
        self._invite_transaction: object | None = None
        self._peer_supports_100rel = False
        self._peer_requires_100rel = False
        self._reliable: ReliableProvisionals | None = None
        self._pending_2xx: _Pending2xx | None = None
        self._uas_timer_headers: list[tuple[str, str]] = []
        self._uas_timer: ActiveSessionTimer | None = None
        self._bye_after_ack: Reason | None = None
        self._bye_wanted = False
        # both
        self._glare: _GlareRetry | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def create_uac(
        cls,
        *,
        from_uri: str,
        to_uri: str,
        request_uri: str,
        local_address: LocalAddress,
        local_contact: str,
        offer: SessionDescription | None = None,
        call_id: str | None = None,
        cseq: int = 1,
        headers: Iterable[tuple[str, str]] = (),
        max_forwards: int = 70,
        **options: Any,
    ) -> InviteSession:
        """A caller. ``offer=None`` is a late offer: the ``answerer`` answers the offer in the 2xx.
        ``max_forwards``: a B2BUA passes on its inbound INVITE's count less one, so a routing loop
        through B2BUAs still ends in 483 instead of going round for ever."""
        session = cls("uac", local_address=local_address, local_contact=local_contact, **options)
        if offer is None and session.answerer is None:
            raise LocalProtocolError("a late-offer INVITE needs an answerer for the offer in the 2xx")
        session.call_id = call_id or new_call_id(local_address.host)
        session.local_tag = new_tag()
        session._invite_headers = list(headers)
        invite = build_request(
            "INVITE",
            request_uri,
            from_uri=from_uri,
            to_uri=to_uri,
            via_host=local_address.host,
            via_port=local_address.port,
            via_transport=local_address.transport.upper(),
            from_tag=session.local_tag,
            call_id=session.call_id,
            cseq=cseq,
            contact=local_contact,
            max_forwards=max_forwards,
        )
        session.invite = invite
        if offer is not None:
            session._set_body(invite, session._stamp(offer))
            session.negotiator.send_offer(session._last_sent_sdp)
        return session

    @classmethod
    def create_uas(
        cls,
        invite: Request,
        *,
        local_address: LocalAddress,
        local_contact: str,
        transaction: object | None = None,
        **options: Any,
    ) -> InviteSession:
        """A callee for ``invite``. It may already be DISCONNECTED (420/421/422/400 answered)."""
        session = cls("uas", local_address=local_address, local_contact=local_contact, **options)
        session._receive_initial_invite(invite, transaction)
        return session

    # ------------------------------------------------------------------ I/O surface

    def next_event(self) -> InviteEvent | None:
        return self._events.popleft() if self._events else None

    def messages_to_send(self) -> list[Outgoing]:
        out, self._outgoing = self._outgoing, []
        return out

    def get_timer(self) -> float | None:
        earliest = min(self._timers.values(), default=None)
        if self._reliable is not None and (deadline := self._reliable.get_timer()) is not None:
            if earliest is None or deadline < earliest:
                earliest = deadline
        return earliest

    def handle_timer(self, now: float) -> None:
        if self._reliable is not None:
            again, expired = self._reliable.handle_timer(now)
            if again is not None and self._invite_transaction is not None:
                self._send_response(again, self._invite_transaction, retransmission=True)
            if expired and self.state in (S.INCOMING, S.EARLY):
                self._reject_invite(504, now, "no PRACK for a reliable provisional response")
        for name, deadline in sorted(self._timers.items(), key=lambda item: item[1]):
            if deadline <= now and self._timers.get(name) == deadline:
                del self._timers[name]
                self._on_timer(name, now)

    @property
    def dialog_id(self) -> DialogId | None:
        return self.dialog.id if self.dialog is not None else None

    @property
    def terminated(self) -> bool:
        return self.state is S.DISCONNECTED

    # ------------------------------------------------------------------ transitions

    def _can(self, trigger: str) -> bool:
        return (self.role, self.state, trigger) in TRANSITIONS

    def _move(self, trigger: str) -> None:
        target = TRANSITIONS.get((self.role, self.state, trigger))
        if target is None:
            raise LocalProtocolError(
                f"{self.role} invite session in state {self.state.name} cannot {trigger}"
            )
        self.state = target
        if target is S.DISCONNECTED:
            self._timers.clear()
            self._glare = None
            self._pending_2xx = None
            if self._reliable is not None:
                self._reliable.stop()

    def _terminate(
        self, trigger: str, reason: str, status_code: int, by_remote: bool, cause: Reason | None
    ) -> None:
        self._move(trigger)
        for dialog in self.early_dialogs.values():
            dialog.terminate()
        if self.dialog is not None:
            self.dialog.terminate()
        self._events.append(Terminated(reason, status_code, by_remote, cause))

    # ------------------------------------------------------------------ SDP helpers

    @property
    def _last_sent_sdp(self) -> SessionDescription:
        assert self._last_local is not None
        return self._last_local

    def _stamp(self, sdp: SessionDescription) -> SessionDescription:
        """Copy ``sdp`` and give it our o= line (version bumped when the content changed)."""
        copy = _copy_sdp(sdp)
        if self._origin is None:
            self._origin = OriginTracker(copy.origin)
        self._origin.stamp(copy)
        self._last_local = copy
        return copy

    @staticmethod
    def _set_body(message: Request | Response, sdp: SessionDescription) -> None:
        message.body = bytes(sdp)
        message.headers.set("Content-Type", SDP_TYPE)
        message.headers.set("Content-Length", str(len(message.body)))

    def _media_update(self, early: bool = False) -> None:
        local, remote = self.negotiator.local, self.negotiator.remote
        if local is not None and remote is not None:
            self._events.append(MediaUpdate(local, remote, early))

    def _answer_offer(self, offer: SessionDescription) -> SessionDescription:
        """Our answer to ``offer``; NoCommonCodecError → 488. Without an answerer nothing is acceptable."""
        if self.answerer is None:
            raise NoCommonCodecError("no answerer is configured for offers")
        return self._stamp(self.answerer(offer))

    # ------------------------------------------------------------------ output helpers

    def _send_request(self, request: Request, entry: _ClientRequest) -> None:
        self._client[(cseq_of(request).sequence, request.method)] = entry
        hop = entry.dialog.next_hop(request) if entry.dialog is not None else request.uri
        self._outgoing.append(SendRequest(request, hop))

    def _send_response(
        self, response: Response, transaction: object | None, *, retransmission: bool = False
    ) -> None:
        self._outgoing.append(SendResponse(response, transaction, retransmission))

    def _send_ack(self, dialog: Dialog, invite_cseq: int, sdp: SessionDescription | None = None) -> None:
        ack = dialog.create_ack(invite_cseq, self.local_address)
        if sdp is not None:
            self._set_body(ack, sdp)
        self._acks[(dialog.id.remote_tag, invite_cseq)] = ack
        while len(self._acks) > _MAX_REMEMBERED_ACKS:
            self._acks.popitem(last=False)
        self._outgoing.append(SendAck(ack, dialog.next_hop(ack)))

    def _common_headers(self) -> list[tuple[str, str]]:
        supported = ["timer"] if self.session_timer_settings is not None else []
        if self.support_100rel:
            supported.insert(0, "100rel")
        headers = [("Allow", ALLOWED_METHODS)]
        if supported:
            headers.append(("Supported", ", ".join(supported)))
        return headers

    def _timer_request_headers(self, interval: int | None = None) -> list[tuple[str, str]]:
        settings = self.session_timer_settings
        if settings is None:
            return []
        if self.session_timer is not None:
            refresher: Literal["uac", "uas"] = "uac" if self.session_timer.we_refresh else "uas"
            se = SessionExpires(interval or self.session_timer.interval, refresher)
        else:
            se = SessionExpires(interval or settings.session_expires)
        return [("Session-Expires", str(se)), ("Min-SE", str(settings.min_se))]

    # ================================================================== UAC: the INVITE

    def send_invite(self, now: float) -> None:
        """Send the INVITE built by :meth:`create_uac`."""
        self._move("send_invite")
        assert self.invite is not None
        for name, value in [*self._common_headers(), *self._invite_headers, *self._timer_request_headers()]:
            self.invite.headers.add(name, value)
        if self.require_100rel:
            self.invite.headers.add("Require", "100rel")
        self._send_request(
            self.invite,
            _ClientRequest(
                self.invite, "invite", None, offered=self.negotiator.state is OfferAnswerState.LOCAL_OFFER
            ),
        )

    def _retry_invite(self, entry: _ClientRequest, adjust: Callable[[Request], None]) -> None:
        """A new INVITE transaction after 421/422: same Call-ID and From tag, next CSeq, new branch."""
        old = entry.request
        retry = Request(method="INVITE", uri=old.uri, body=old.body)
        for name in old.headers.keys():
            retry.headers.setlist(name, list(old.headers.getlist(name)))
        number = cseq_of(old).sequence + 1
        retry.headers.set("CSeq", f"{number} INVITE")
        retry.headers.set("Via", self.local_address.via(new_branch()))
        adjust(retry)
        self._move("retry_invite")
        for dialog in self.early_dialogs.values():
            dialog.terminate()
        self.early_dialogs.clear()
        self._last_rseq.clear()
        self._provisional_seen = False
        self.invite = retry
        self._send_request(retry, dataclasses.replace(entry, request=retry, retries=entry.retries + 1))

    def _on_invite_response(self, entry: _ClientRequest, response: Response, now: float) -> None:
        code = response.code
        if code == 100:
            if self._can("recv_100"):
                self._move("recv_100")
            self._client[(cseq_of(entry.request).sequence, "INVITE")] = entry
            return
        if code < 200:
            self._client[(cseq_of(entry.request).sequence, "INVITE")] = entry
            if self.state in (S.CALLING, S.EARLY):
                self._on_invite_provisional(entry, response, now)
            return
        if code < 300:
            self._on_invite_2xx(entry, response, now)
            return
        if self.state not in (S.CALLING, S.EARLY):
            return
        if self._retry_after_failure(entry, response):
            return
        self.negotiator.rollback()
        if self._cancel_sent or self._cancel_wanted is not None:
            reason = "cancelled"
        else:
            reason = response.phrase or reason_phrase(code)
        self._terminate("recv_failure", reason, code, True, Reason.of(response))

    def _retry_after_failure(self, entry: _ClientRequest, response: Response) -> bool:
        if entry.retries >= _MAX_INVITE_RETRIES or self._cancel_sent or self._cancel_wanted is not None:
            return False
        if response.code == 422 and self.session_timer_settings is not None:
            try:
                floor = min_se_of(response)
            except ValueError:
                return False
            if floor is None:
                return False
            interval = max(floor, self.session_timer_settings.session_expires)

            def raise_interval(request: Request) -> None:
                request.headers.set("Session-Expires", str(interval))
                request.headers.set("Min-SE", str(floor))

            self._retry_invite(entry, raise_interval)
            return True
        if response.code == 421 and has_option(response, "Require", "100rel") and self.support_100rel:
            if has_option(entry.request, "Require", "100rel"):
                return False

            def require_100rel(request: Request) -> None:
                request.headers.add("Require", "100rel")

            self._retry_invite(entry, require_100rel)
            return True
        return False

    def _early_dialog(self, response: Response) -> Dialog | None:
        tag = to_tag(response)
        if tag is None or self.invite is None:
            return None
        dialog = self.early_dialogs.get(tag)
        if dialog is not None:
            dialog.update_remote_target(response)
            return dialog
        if len(self.early_dialogs) >= self.max_early_dialogs:
            return None
        try:
            dialog = Dialog.create_uac(self.invite, response, self.local_contact)
        except RemoteProtocolError:
            return None
        self.early_dialogs[tag] = dialog
        return dialog

    def _on_invite_provisional(self, entry: _ClientRequest, response: Response, now: float) -> None:
        self._provisional_seen = True
        dialog = self._early_dialog(response)
        rseq = rseq_of(response)
        reliable = (
            self.support_100rel
            and dialog is not None
            and rseq is not None
            and has_option(response, "Require", "100rel")
        )
        if reliable:
            assert dialog is not None and rseq is not None
            last = self._last_rseq.get(dialog.id.remote_tag)
            if last is not None and rseq != last + 1:
                return  # a retransmission (or out of order): RFC 3262 §4, not PRACKed again
            self._last_rseq[dialog.id.remote_tag] = rseq
        self._move("recv_1xx")
        prack_body: SessionDescription | None = None
        dialog_id = dialog.id if dialog is not None else None
        if _has_sdp(response):
            prack_body = self._provisional_sdp(response, reliable, dialog_id)
        if reliable:
            assert dialog is not None and rseq is not None
            prack = dialog.create_request(
                "PRACK",
                self.local_address,
                headers=[("RAck", str(RAck(rseq, cseq_of(entry.request).sequence, "INVITE")))],
            )
            if prack_body is not None:
                self._set_body(prack, prack_body)
            self._send_request(prack, _ClientRequest(prack, "prack", dialog))
        if response.code == 183 or _has_sdp(response):
            self._events.append(EarlyMedia(response.code, dialog_id))
        else:
            self._events.append(Ringing(response.code, dialog_id))
        if self._cancel_wanted is not None and not self._cancel_sent:
            self._send_cancel(self._cancel_wanted, now)

    def _provisional_sdp(
        self, response: Response, reliable: bool, dialog_id: DialogId | None
    ) -> SessionDescription | None:
        """SDP in a 1xx: the answer to our INVITE offer, or (reliable only) an offer we answer in PRACK."""
        try:
            sdp = SessionDescription.parse(response.body)
        except ValueError:
            return None
        if self.negotiator.state is OfferAnswerState.LOCAL_OFFER:
            self.negotiator.receive_answer(sdp)
            self._answer_is_provisional = True
            self._media_update(early=True)
            return None
        if reliable and self.negotiator.state is OfferAnswerState.IDLE and not self.negotiator.established:
            try:
                answer = self._answer_offer(sdp)
            except (NoCommonCodecError, ValueError):
                return None
            self.negotiator.receive_offer(sdp)
            self.negotiator.send_answer(answer)
            self._media_update(early=True)
            return answer
        return None

    def _on_invite_2xx(self, entry: _ClientRequest, response: Response, now: float) -> None:
        tag = to_tag(response)
        if tag is None or self.invite is None:
            return
        number = cseq_of(response).sequence
        remembered = self._acks.get((tag, number))
        if remembered is not None:
            dialog = self.dialog if self.dialog is not None and self.dialog.id.remote_tag == tag else None
            hop = dialog.next_hop(remembered) if dialog is not None else remembered.uri
            self._outgoing.append(SendAck(remembered, hop))  # the 2xx was retransmitted (§13.2.2.4)
            return
        if self.state not in (S.CALLING, S.EARLY):
            self._ack_and_bye_fork(response, number)
            return
        dialog = self.early_dialogs.pop(tag, None)
        try:
            if dialog is not None:
                dialog.confirm(response)
            else:
                dialog = Dialog.create_uac(self.invite, response, self.local_contact)
        except RemoteProtocolError:
            return
        self.dialog = dialog
        for other in self.early_dialogs.values():
            other.terminate()  # their own 2xx, if one comes, gets ACK + BYE
        self.early_dialogs.clear()
        self.peer_allows = frozenset(m.upper() for m in _option_values(response, "Allow"))
        self._move("recv_2xx")
        ack_sdp, failure = self._sdp_in_invite_2xx(response)
        self._send_ack(dialog, number, ack_sdp)
        self._move("send_ack")
        if failure is None:
            self._media_update()
        self._events.append(Answered(dialog.id))
        self._apply_timer_from_response(entry, response, now)
        if failure is not None:
            self._send_bye(
                Reason("SIP", failure, "offer/answer failed"),
                now,
                text="media negotiation failed",
                code=failure,
            )
        elif self._cancel_sent or self._cancel_wanted is not None:
            self._send_bye(self._cancel_wanted, now, text="cancelled", code=487)

    def _sdp_in_invite_2xx(self, response: Response) -> tuple[SessionDescription | None, int | None]:
        """Handle the SDP of the winning 2xx: (body for the ACK, failure status or None)."""
        negotiator = self.negotiator
        sdp: SessionDescription | None = None
        if _has_sdp(response):
            try:
                sdp = SessionDescription.parse(response.body)
            except ValueError:
                sdp = None
                if negotiator.state is not OfferAnswerState.IDLE or not negotiator.established:
                    negotiator.rollback()
                    return None, 400
        if negotiator.state is OfferAnswerState.LOCAL_OFFER:
            if sdp is None:
                negotiator.rollback()
                return None, 488  # our offer went unanswered
            negotiator.receive_answer(sdp)
            return None, None
        if not negotiator.established:
            if sdp is None:
                return None, 488  # late offer, but no offer in the 2xx
            try:
                answer = self._answer_offer(sdp)
            except NoCommonCodecError:
                return None, 488
            negotiator.receive_offer(sdp)
            negotiator.send_answer(answer)
            return answer, None
        if sdp is not None and self._answer_is_provisional and negotiator.remote is not None:
            if str(sdp) != str(negotiator.remote):
                negotiator.replace_remote(sdp)  # another fork answered, or the answer changed
        self._answer_is_provisional = False
        return None, None

    def _ack_and_bye_fork(self, response: Response, number: int) -> None:
        """§13.2.2.4: a 2xx from another fork after the session is up: ACK it, then BYE it."""
        if self.invite is None or number != cseq_of(self.invite).sequence:
            return  # not a 2xx to our INVITE: nothing to ACK
        if self.dialog is not None and to_tag(response) == self.dialog.id.remote_tag:
            return  # our own dialog's 2xx whose ACK we no longer remember: never BYE ourselves
        try:
            dialog = Dialog.create_uac(self.invite, response, self.local_contact)
        except RemoteProtocolError:
            return
        self._send_ack(dialog, number)
        bye = dialog.create_request(
            "BYE",
            self.local_address,
            headers=[("Reason", str(Reason("SIP", 200, "Call completed elsewhere")))],
        )
        dialog.terminate()
        self._send_request(bye, _ClientRequest(bye, "bye", dialog))

    # ------------------------------------------------------------------ UAC: CANCEL

    def cancel(self, now: float, reason: Reason | None = None) -> None:
        """CANCEL the pending INVITE (sent once a provisional response has arrived, §9.1). Once only: a
        CANCEL sent or waiting for a provisional covers any later reason to cancel (its transaction
        retransmits it, and a second one would reuse the INVITE's branch)."""
        self._move("send_cancel")
        if self._cancel_sent or self._cancel_wanted is not None:
            return
        if self._provisional_seen:
            self._send_cancel(reason, now)
        else:
            self._cancel_wanted = reason or Reason("SIP", 487, "cancelled")

    def _send_cancel(self, reason: Reason | None, now: float) -> None:
        assert self.invite is not None
        cancel = build_cancel(self.invite)
        if reason is not None:
            cancel.headers.add("Reason", str(reason))
        self._cancel_sent = True
        self._send_request(cancel, _ClientRequest(cancel, "cancel", None))
        self._timers["cancel_guard"] = now + 64 * self.timers.t1

    # ================================================================== UAS: the INVITE

    def _receive_initial_invite(self, invite: Request, transaction: object | None) -> None:
        self._move("recv_invite")
        self.invite = invite
        self._invite_transaction = transaction
        self.call_id = invite.headers.get("Call-ID") or ""
        self.local_tag = new_tag()
        self.peer_allows = frozenset(m.upper() for m in _option_values(invite, "Allow"))
        self._peer_requires_100rel = has_option(invite, "Require", "100rel")
        self._peer_supports_100rel = self._peer_requires_100rel or has_option(invite, "Supported", "100rel")
        known = {"timer"} | ({"100rel"} if self.support_100rel else set())
        unsupported = [option for option in _option_values(invite, "Require") if option not in known]
        if unsupported:
            self._reject_invite(420, 0.0, "unsupported extension", [("Unsupported", ", ".join(unsupported))])
            return
        if self.require_100rel and not self._peer_supports_100rel:
            self._reject_invite(421, 0.0, "100rel required", [("Require", "100rel")])
            return
        if self.session_timer_settings is not None:
            try:
                outcome = negotiate_as_uas(invite, self.session_timer_settings)
            except ValueError:
                self._reject_invite(400, 0.0, "bad session timer headers")
                return
            if isinstance(outcome, IntervalTooSmall):
                self._reject_invite(422, 0.0, "session interval too small", [("Min-SE", str(outcome.min_se))])
                return
            self._uas_timer, self._uas_timer_headers = outcome
        if not invite.headers.getlist("Contact"):
            self._reject_invite(400, 0.0, "INVITE without Contact")
            return
        if _has_sdp(invite):
            try:
                self.negotiator.receive_offer(SessionDescription.parse(invite.body))
            except ValueError:
                self._reject_invite(400, 0.0, "SDP offer is not valid")
                return

    def _uas_dialog(self, response: Response) -> Dialog:
        assert self.invite is not None
        if self.dialog is None:
            self.dialog = Dialog.create_uas(self.invite, response, self.local_contact)
        return self.dialog

    def answer(
        self,
        status_code: int,
        now: float,
        *,
        sdp: SessionDescription | None = None,
        reason: str | None = None,
        reliable: bool | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """UAS: send a 101-699 to the INVITE (pjsip's ``inv_answer``).

        * 1xx: ``reliable`` asks for RFC 3262 (it is forced when the peer requires 100rel); ``sdp``
          is the answer to the INVITE's offer (early media) or, reliable only, our offer.
        * 2xx: the answer comes from ``sdp`` or the ``answerer``; with a late offer ``sdp`` is our
          offer. No acceptable codec → a 488 goes out instead.
        * 3xx-6xx: rejects the call.
        """
        if self.role != "uas" or self.invite is None:
            raise LocalProtocolError(f"{self.role} invite session cannot answer")
        if not 101 <= status_code <= 699:
            raise LocalProtocolError(f"cannot answer with {status_code}")
        if status_code >= 300:
            if not self._can("send_failure"):
                raise LocalProtocolError(f"uas invite session in state {self.state.name} cannot send_failure")
            self._reject_invite(status_code, now, reason or reason_phrase(status_code), list(headers))
            return
        trigger = "send_1xx" if status_code < 200 else "send_2xx"
        if not self._can(trigger):
            raise LocalProtocolError(f"uas invite session in state {self.state.name} cannot {trigger}")
        if status_code < 200:
            self._send_provisional(status_code, now, sdp, reason, reliable, list(headers))
        else:
            self._send_invite_2xx(status_code, now, sdp, reason, list(headers))

    def _send_provisional(
        self,
        status_code: int,
        now: float,
        sdp: SessionDescription | None,
        reason: str | None,
        reliable: bool | None,
        headers: list[tuple[str, str]],
    ) -> None:
        assert self.invite is not None
        peer_ok = self._peer_supports_100rel and self.support_100rel
        if reliable and not peer_ok:
            raise LocalProtocolError("the peer does not support 100rel: no reliable provisional response")
        use_reliable = self._peer_requires_100rel or bool(reliable) or (self.require_100rel and peer_ok)
        body: SessionDescription | None = None
        early_update = False
        negotiator = self.negotiator
        if sdp is not None:
            if negotiator.state is OfferAnswerState.REMOTE_OFFER:
                body = self._stamp(sdp)
                negotiator.send_answer(body)
                early_update = True
            elif not negotiator.established and negotiator.state is OfferAnswerState.IDLE:
                if not use_reliable:
                    raise LocalProtocolError("an offer in a provisional response needs 100rel")
                body = self._stamp(sdp)
                negotiator.send_offer(body)
            else:
                body = negotiator.local
        response = build_response(self.invite, status_code, reason, to_tag=self.local_tag, headers=headers)
        dialog = self._uas_dialog(response)
        response = dialog.create_response(self.invite, status_code, reason, headers=headers)
        if body is not None:
            self._set_body(response, body)
        self._move("send_1xx")
        if use_reliable:
            if self._reliable is None:
                first = 1 + int(self._random() * 2**30)
                self._reliable = ReliableProvisionals(first, self.timers.t1)
            try:
                now_send = self._reliable.send(response, now)
            except OverflowError:
                raise LocalProtocolError("too many reliable provisional responses wait for PRACK") from None
            if now_send is not None:
                self._send_response(now_send, self._invite_transaction)
        else:
            self._send_response(response, self._invite_transaction)
        if early_update:
            self._media_update(early=True)

    def _send_invite_2xx(
        self,
        status_code: int,
        now: float,
        sdp: SessionDescription | None,
        reason: str | None,
        headers: list[tuple[str, str]],
    ) -> None:
        assert self.invite is not None
        negotiator = self.negotiator
        body: SessionDescription | None
        completed = False
        if negotiator.state is OfferAnswerState.REMOTE_OFFER:
            assert negotiator.pending_offer is not None
            try:
                body = self._stamp(sdp) if sdp is not None else self._answer_offer(negotiator.pending_offer)
            except NoCommonCodecError:
                self._reject_invite(488, now, "no common codec")
                return
            negotiator.send_answer(body)
            completed = True
        elif negotiator.state is OfferAnswerState.LOCAL_OFFER:
            raise LocalProtocolError("our offer in a reliable provisional response is still unanswered")
        elif negotiator.established:
            body = negotiator.local
        else:
            if sdp is None:
                raise LocalProtocolError("late offer: the 2xx must carry our offer (sdp=...)")
            body = self._stamp(sdp)
            negotiator.send_offer(body)
        extra = [*self._common_headers(), *self._uas_timer_headers, *headers]
        provisional = build_response(self.invite, status_code, reason, to_tag=self.local_tag)
        dialog = self._uas_dialog(provisional)
        dialog.state = DialogState.CONFIRMED
        response = dialog.create_response(self.invite, status_code, reason, headers=extra)
        if body is not None:
            self._set_body(response, body)
        if self._reliable is not None:
            self._reliable.stop()
        self._move("send_2xx")
        self._send_response(response, self._invite_transaction)
        self._start_2xx_retransmission(
            response, self._invite_transaction, cseq_of(self.invite).sequence, now, initial=True
        )
        if completed:
            self._media_update()

    def _reject_invite(
        self, status_code: int, now: float, reason: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        assert self.invite is not None
        response = build_response(self.invite, status_code, to_tag=self.local_tag, headers=headers or [])
        self.negotiator.rollback()
        self._send_response(response, self._invite_transaction)
        self._terminate("send_failure", reason, status_code, False, None)

    def _start_2xx_retransmission(
        self, response: Response, transaction: object | None, cseq: int, now: float, *, initial: bool
    ) -> None:
        next_send = now + self.timers.t1 if self.retransmit_2xx else None
        self._pending_2xx = _Pending2xx(
            response, transaction, cseq, self.timers.t1, next_send, now + 64 * self.timers.t1, initial
        )
        self._arm_2xx_timers()

    def _arm_2xx_timers(self) -> None:
        pending = self._pending_2xx
        if pending is None:
            self._timers.pop("2xx_retransmit", None)
            self._timers.pop("ack_wait", None)
            return
        if pending.next_send is not None:
            self._timers["2xx_retransmit"] = pending.next_send
        self._timers["ack_wait"] = pending.give_up_at

    # ------------------------------------------------------------------ UAS: CANCEL

    def receive_cancel(
        self,
        cancel: Request,
        now: float,
        *,
        transaction: object | None = None,
        respond_to_cancel: bool = True,
    ) -> None:
        """A CANCEL for our INVITE: 200 to the CANCEL (unless the endpoint did), 487 to the INVITE."""
        invite = self.invite
        matches = (
            self.role == "uas"
            and invite is not None
            and cancel.headers.get("Call-ID") == self.call_id
            and from_tag(cancel) == from_tag(invite)
            and cseq_of(cancel).sequence == cseq_of(invite).sequence
        )
        if respond_to_cancel:
            code = 200 if matches else 481
            self._send_response(build_response(cancel, code, to_tag=self.local_tag or None), transaction)
        if not matches or not self._can("recv_cancel"):
            return
        assert invite is not None
        self.negotiator.rollback()
        self._send_response(build_response(invite, 487, to_tag=self.local_tag), self._invite_transaction)
        self._terminate("recv_cancel", "cancelled by caller", 487, True, Reason.of(cancel))

    # ================================================================== in-dialog requests

    def receive_request(self, request: Request, now: float, transaction: object | None = None) -> None:
        """Any request for this session other than the initial INVITE. Never raises for peer input."""
        try:
            self._receive_request(request, now, transaction)
        except RemoteProtocolError as error:
            if error.status_code is not None and request.method != "ACK":
                self._respond_plain(request, error.status_code, transaction)
        except ValueError:
            if request.method != "ACK":
                self._respond_plain(request, 400, transaction)

    def _respond_plain(
        self, request: Request, code: int, transaction: object | None, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        tag = to_tag(request) or self.local_tag or None
        self._send_response(build_response(request, code, to_tag=tag, headers=headers), transaction)

    def _dialog_for(self, request: Request) -> Dialog | None:
        dialog_id = DialogId.of_incoming_request(request)
        if dialog_id is None:
            return None
        if self.dialog is not None and self.dialog.id == dialog_id:
            return self.dialog
        dialog = self.early_dialogs.get(dialog_id.remote_tag)
        if dialog is not None and dialog.id == dialog_id:
            return dialog
        return None

    def _receive_request(self, request: Request, now: float, transaction: object | None) -> None:
        method = request.method
        if method == "CANCEL":
            self.receive_cancel(request, now, transaction=transaction)
            return
        dialog = self._dialog_for(request)
        if dialog is None:
            raise RemoteProtocolError("no such dialog", 481)
        if method not in _KNOWN_METHODS:
            raise RemoteProtocolError(f"{method} is not implemented", 501)
        dialog.receive_request(request)  # 481 / 500 for an old CSeq
        if method == "ACK":
            self._on_ack(request, now)
        elif method == "BYE":
            self._on_bye(request, dialog, transaction)
        elif method == "INVITE":
            self._on_reinvite(request, dialog, now, transaction)
        elif method == "UPDATE":
            self._on_update(request, dialog, now, transaction)
        elif method == "PRACK":
            self._on_prack(request, dialog, now, transaction)
        elif method == "OPTIONS":
            self._send_response(
                dialog.create_response(request, 200, headers=self._common_headers()), transaction
            )
        elif method in _APP_METHODS:
            self._events.append(InDialogRequest(request, transaction))
        else:
            self._send_response(
                dialog.create_response(request, 405, headers=[("Allow", ALLOWED_METHODS)]), transaction
            )

    def respond(
        self,
        request: Request,
        transaction: object | None,
        status_code: int,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> None:
        """Answer an :class:`InDialogRequest` (INFO, REFER, NOTIFY, MESSAGE)."""
        dialog = self._dialog_for(request)
        if dialog is None:
            raise LocalProtocolError("the request belongs to no dialog of this session")
        self._send_response(
            dialog.create_response(
                request, status_code, headers=headers, body=body, content_type=content_type
            ),
            transaction,
        )

    def _on_ack(self, ack: Request, now: float) -> None:
        pending = self._pending_2xx
        if pending is None or cseq_of(ack).sequence != pending.cseq:
            return  # a retransmitted ACK, or one for a 2xx we no longer wait for
        self._pending_2xx = None
        self._arm_2xx_timers()
        failure = False
        if self.negotiator.state is OfferAnswerState.LOCAL_OFFER:
            # Late offer: the answer is in the ACK.
            try:
                if not _has_sdp(ack):
                    raise ValueError("ACK without the answer")
                self.negotiator.receive_answer(SessionDescription.parse(ack.body))
            except (ValueError, RemoteProtocolError):
                self.negotiator.rollback()
                failure = True
            else:
                self._media_update()
        if pending.initial:
            self._move("recv_ack")
            assert self.dialog is not None
            self._events.append(Answered(self.dialog.id))
            if self._uas_timer is not None:
                self._start_session_timer(self._uas_timer, now)
        if failure and self.state is S.CONFIRMED:
            self._send_bye(
                Reason("SIP", 488, "no answer in ACK"), now, text="media negotiation failed", code=488
            )
        elif self._bye_wanted and self.state is S.CONFIRMED:
            self._send_bye(self._bye_after_ack, now)

    def _on_bye(self, bye: Request, dialog: Dialog, transaction: object | None) -> None:
        self._send_response(dialog.create_response(bye, 200), transaction)
        if not self._can("recv_bye"):
            return
        if self.role == "uas" and self.state in (S.INCOMING, S.EARLY) and self.invite is not None:
            self._send_response(
                build_response(self.invite, 487, to_tag=self.local_tag), self._invite_transaction
            )
        cause = Reason.of(bye)
        self._terminate("recv_bye", cause.text if cause and cause.text else "remote hangup", 200, True, cause)

    def _check_timer_request(
        self, request: Request, dialog: Dialog, transaction: object | None
    ) -> tuple[ActiveSessionTimer | None, list[tuple[str, str]]] | None:
        """RFC 4028 for a re-INVITE/UPDATE we answer; ``None`` when a 422/400 went out."""
        settings = self.session_timer_settings
        if settings is None:
            return None, []
        try:
            outcome = negotiate_as_uas(request, settings)
        except ValueError:
            self._send_response(dialog.create_response(request, 400), transaction)
            return None
        if isinstance(outcome, IntervalTooSmall):
            self._send_response(
                dialog.create_response(request, 422, headers=[("Min-SE", str(outcome.min_se))]), transaction
            )
            return None
        return outcome

    def _on_reinvite(self, request: Request, dialog: Dialog, now: float, transaction: object | None) -> None:
        retry_after = ("Retry-After", str(int(self._random() * 10)))
        if self.state is not S.CONFIRMED or self._pending_2xx is not None:
            # §14.2: an INVITE while one we received is still unanswered/unacknowledged → 500.
            self._send_response(dialog.create_response(request, 500, headers=[retry_after]), transaction)
            return
        if (
            any(entry.purpose == "reinvite" for entry in self._client.values())
            or self.negotiator.state is not OfferAnswerState.IDLE
        ):
            self._send_response(dialog.create_response(request, 491), transaction)
            return
        timer = self._check_timer_request(request, dialog, transaction)
        if timer is None:
            return
        active, timer_headers = timer
        body: SessionDescription | None
        completed = False
        if _has_sdp(request):
            try:
                offer = SessionDescription.parse(request.body)
            except ValueError:
                self._send_response(dialog.create_response(request, 400), transaction)
                return
            try:
                body = self._answer_offer(offer)
            except NoCommonCodecError:
                self._send_response(dialog.create_response(request, 488), transaction)
                return
            self.negotiator.receive_offer(offer)
            self.negotiator.send_answer(body)
            completed = True
        else:
            # A re-INVITE without an offer: we offer our current session again (answer in the ACK).
            if self.negotiator.local is None:
                self._send_response(dialog.create_response(request, 488), transaction)
                return
            body = self._stamp(self.negotiator.local)
            self.negotiator.send_offer(body)
        self._move("recv_modify")
        response = dialog.create_response(request, 200, headers=[*self._common_headers(), *timer_headers])
        self._set_body(response, body)
        self._send_response(response, transaction)
        self._start_2xx_retransmission(response, transaction, cseq_of(request).sequence, now, initial=False)
        if completed:
            self._media_update()
        if active is not None:
            self._start_session_timer(active, now)

    def _on_update(self, request: Request, dialog: Dialog, now: float, transaction: object | None) -> None:
        if self.state not in (S.EARLY, S.CONNECTING, S.CONFIRMED, S.INCOMING):
            self._send_response(dialog.create_response(request, 481), transaction)
            return
        timer = self._check_timer_request(request, dialog, transaction)
        if timer is None:
            return
        active, timer_headers = timer
        body: SessionDescription | None = None
        if _has_sdp(request):
            try:
                offer = SessionDescription.parse(request.body)
            except ValueError:
                self._send_response(dialog.create_response(request, 400), transaction)
                return
            try:
                self.negotiator.receive_offer(offer)
            except OfferPending as pending:
                headers = (
                    [("Retry-After", str(int(self._random() * 10)))] if pending.status_code == 500 else []
                )
                self._send_response(
                    dialog.create_response(request, pending.status_code or 491, headers=headers), transaction
                )
                return
            try:
                body = self._answer_offer(offer)
            except NoCommonCodecError:
                self.negotiator.rollback()
                self._send_response(dialog.create_response(request, 488), transaction)
                return
            self.negotiator.send_answer(body)
        response = dialog.create_response(request, 200, headers=[*self._common_headers(), *timer_headers])
        if body is not None:
            self._set_body(response, body)
        self._send_response(response, transaction)
        if body is not None:
            self._media_update(early=self.state is not S.CONFIRMED)
        if active is not None and self.state is S.CONFIRMED:
            self._start_session_timer(active, now)

    def _on_prack(self, prack: Request, dialog: Dialog, now: float, transaction: object | None) -> None:
        if self.role != "uas" or self._reliable is None or self.invite is None:
            self._send_response(dialog.create_response(prack, 481), transaction)
            return
        try:
            rack = RAck.parse(prack.headers.get("RAck") or "")
        except ValueError:
            self._send_response(dialog.create_response(prack, 400), transaction)
            return
        acknowledged, following = self._reliable.prack(rack, cseq_of(self.invite).sequence, now)
        if acknowledged is None:
            self._send_response(dialog.create_response(prack, 481), transaction)
            return
        if _has_sdp(prack) and self.negotiator.state is OfferAnswerState.LOCAL_OFFER:
            try:
                self.negotiator.receive_answer(SessionDescription.parse(prack.body))
            except ValueError:
                self.negotiator.rollback()
            else:
                self._media_update(early=True)
        self._send_response(dialog.create_response(prack, 200), transaction)
        if following is not None:
            self._send_response(following, self._invite_transaction)

    # ================================================================== responses to our requests

    def receive_response(self, response: Response, now: float) -> None:
        """A response to a request this session sent. Never raises for peer input."""
        try:
            cseq = cseq_of(response)
        except (ValueError, KeyError):
            return
        if response.headers.get("Call-ID") != self.call_id or from_tag(response) != self.local_tag:
            return
        key = (cseq.sequence, cseq.method)
        entry = self._client.get(key)
        if entry is None:
            if cseq.method == "INVITE" and 200 <= response.code < 300 and self.invite is not None:
                # A retransmitted 2xx (its transaction is gone for us): ACK it again.
                self._on_invite_2xx(_ClientRequest(self.invite, "invite", None), response, now)
            return
        if response.code >= 200:
            del self._client[key]
        try:
            self._dispatch_response(entry, response, now)
        except (ValueError, RemoteProtocolError):
            pass  # a broken header in a response: dropped like any unusable response

    def request_failed(self, method: str, cseq: int, now: float, status_code: int = 408) -> None:
        """The client transaction for (``cseq``, ``method``) timed out or hit a transport error."""
        entry = self._client.get((cseq, method))
        if entry is None:
            return
        response = build_response(entry.request, status_code, to_tag=to_tag(entry.request) or "")
        self.receive_response(response, now)

    def _dispatch_response(self, entry: _ClientRequest, response: Response, now: float) -> None:
        purpose = entry.purpose
        if purpose == "invite":
            if (
                self.role == "uac"
                and self.invite is not None
                and cseq_of(response).sequence == cseq_of(self.invite).sequence
            ):
                self._on_invite_response(entry, response, now)
            return
        if response.code < 200:
            return
        if purpose in ("reinvite", "update"):
            self._on_modify_response(entry, response, now)
        elif purpose == "app":
            self._events.append(InDialogResponse(entry.request.method, response))
            self._maybe_dialog_gone(response, now)
        elif purpose == "prack":
            self._maybe_dialog_gone(response, now)

    def _maybe_dialog_gone(self, response: Response, now: float) -> bool:
        """§12.2.1.2: a 481 or 408 to an in-dialog request ends the dialog (and the session)."""
        if response.code not in (408, 481):
            return False
        if self._can("dialog_gone"):
            if response.code == 408:
                self._send_bye(Reason("SIP", 408, "request timeout"), now, text="request timeout", code=408)
            else:
                self._terminate("dialog_gone", reason_phrase(481), 481, True, None)
        elif self._can("give_up"):
            self._terminate("give_up", reason_phrase(response.code), response.code, True, None)
        return True

    def _on_modify_response(self, entry: _ClientRequest, response: Response, now: float) -> None:
        method = entry.request.method
        code = response.code
        dialog = entry.dialog
        if code < 300:
            if method == "INVITE" and dialog is not None:
                dialog.update_remote_target(response)
                ack_sdp = self._modify_2xx_sdp(entry, response)
                self._send_ack(dialog, cseq_of(response).sequence, ack_sdp)
            else:
                if dialog is not None:
                    dialog.update_remote_target(response)
                self._modify_2xx_sdp(entry, response)
            self._apply_timer_from_response(entry, response, now)
            return
        if entry.offered:
            self.negotiator.rollback()
        if self._maybe_dialog_gone(response, now):
            return
        if code == 491 and self.state is S.CONFIRMED and self._glare is None:
            delay = (
                (2.1 + 1.9 * self._random())
                if (dialog is not None and dialog.we_created)
                else 2.0 * self._random()
            )
            offer = self._last_local if entry.offered else None
            self._glare = _GlareRetry(method, offer, now + delay)
            self._timers["glare_retry"] = now + delay
            self._events.append(GlareRetry(method, delay))
            return
        if code == 422 and self.session_timer_settings is not None and entry.retries < _MAX_INVITE_RETRIES:
            try:
                floor = min_se_of(response)
            except ValueError:
                floor = None
            if floor is not None and self.state is S.CONFIRMED:
                offer = self._last_local if entry.offered else None
                self._send_modify(
                    method, now, offer, refresh=entry.refresh, interval=floor, retries=entry.retries + 1
                )
                return
        if entry.offered:
            self._events.append(OfferRejected(method, code))

    def _modify_2xx_sdp(self, entry: _ClientRequest, response: Response) -> SessionDescription | None:
        negotiator = self.negotiator
        sdp: SessionDescription | None = None
        if _has_sdp(response):
            try:
                sdp = SessionDescription.parse(response.body)
            except ValueError:
                sdp = None
        if entry.offered and negotiator.state is OfferAnswerState.LOCAL_OFFER:
            if sdp is None:
                negotiator.rollback()
                self._events.append(OfferRejected(entry.request.method, 488))
                return None
            negotiator.receive_answer(sdp)
            self._media_update(early=self.state is not S.CONFIRMED)
            return None
        if (
            not entry.offered
            and entry.request.method == "INVITE"
            and sdp is not None
            and negotiator.state is OfferAnswerState.IDLE
        ):
            try:
                answer = self._answer_offer(sdp)
            except NoCommonCodecError:
                return None
            negotiator.receive_offer(sdp)
            negotiator.send_answer(answer)
            self._media_update()
            return answer
        return None

    # ================================================================== session modification

    def reinvite(self, now: float, offer: SessionDescription | None = None) -> None:
        """Send a re-INVITE (``offer=None``: ask the peer to offer, answer in the ACK)."""
        self._send_modify("INVITE", now, offer)

    def update(self, now: float, offer: SessionDescription | None = None) -> None:
        """Send an UPDATE (RFC 3311), in the early or confirmed dialog."""
        self._send_modify("UPDATE", now, offer)

    def hold(self, now: float) -> None:
        """Re-INVITE with our current SDP made sendonly (RFC 3264 §8.4)."""
        self.reinvite(now, self._with_direction(Direction.SENDONLY))

    def resume(self, now: float) -> None:
        self.reinvite(now, self._with_direction(Direction.SENDRECV))

    def _with_direction(self, direction: Direction) -> SessionDescription:
        if self.negotiator.local is None:
            raise LocalProtocolError("no active media session to hold or resume")
        sdp = _copy_sdp(self.negotiator.local)
        sdp.remove_attributes("sendrecv")
        for name in ("sendonly", "recvonly", "inactive"):
            sdp.remove_attributes(name)
        for media in sdp.media:
            media.set_direction(direction)
        return sdp

    def _modify_dialog(self, method: str) -> Dialog:
        if self.state is S.CONFIRMED and self.dialog is not None:
            return self.dialog
        if method == "UPDATE":
            if self.role == "uas" and self.dialog is not None and self.state in (S.EARLY, S.CONNECTING):
                return self.dialog
            if self.role == "uac" and self.state is S.EARLY and self.early_dialogs:
                return next(reversed(self.early_dialogs.values()))
        raise LocalProtocolError(
            f"{self.role} invite session in state {self.state.name} cannot send {method}"
        )

    def _send_modify(
        self,
        method: str,
        now: float,
        offer: SessionDescription | None,
        *,
        refresh: bool = False,
        interval: int | None = None,
        retries: int = 0,
    ) -> None:
        dialog = self._modify_dialog(method)
        if method == "INVITE":
            if (
                any(entry.purpose == "reinvite" for entry in self._client.values())
                or self._pending_2xx is not None
            ):
                raise LocalProtocolError("a re-INVITE is already in progress")
            if offer is None and self.answerer is None:
                raise LocalProtocolError("a re-INVITE without offer needs an answerer")
        offered = offer is not None
        if offered and self.negotiator.state is not OfferAnswerState.IDLE:
            raise LocalProtocolError(f"cannot offer: offer/answer state is {self.negotiator.state.value}")
        headers = [*self._common_headers()]
        if self.session_timer is not None or (
            self.session_timer_settings is not None and interval is not None
        ):
            headers += self._timer_request_headers(interval)
        request = dialog.create_request(method, self.local_address, headers=headers)
        if offer is not None:
            body = self._stamp(offer)
            self._set_body(request, body)
            self.negotiator.send_offer(body)
        if self.state is S.CONFIRMED:
            self._move("send_modify")
        self._glare = None
        self._timers.pop("glare_retry", None)
        purpose = "reinvite" if method == "INVITE" else "update"
        self._send_request(
            request,
            _ClientRequest(request, purpose, dialog, offered=offered, refresh=refresh, retries=retries),
        )

    def send_request(
        self,
        method: str,
        now: float,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """An application request in the dialog (INFO, REFER, NOTIFY, MESSAGE); see InDialogResponse."""
        if method not in _APP_METHODS and method != "OPTIONS":
            raise LocalProtocolError(f"{method} is not sent with send_request()")
        if self.dialog is None or self.state not in (S.CONNECTING, S.CONFIRMED):
            raise LocalProtocolError(
                f"{self.role} invite session in state {self.state.name} has no dialog for {method}"
            )
        request = self.dialog.create_request(
            method, self.local_address, body=body, content_type=content_type, headers=headers
        )
        self._send_request(request, _ClientRequest(request, "app", self.dialog))
        return request

    # ================================================================== session timers

    def _apply_timer_from_response(self, entry: _ClientRequest, response: Response, now: float) -> None:
        settings = self.session_timer_settings
        if settings is None or self.state is not S.CONFIRMED:
            return
        try:
            granted = session_expires_of(response)
        except ValueError:
            granted = None
        if granted is not None:
            active = ActiveSessionTimer(granted.interval, we_refresh=granted.refresher != "uas")
        elif entry.request.headers.get("Session-Expires") is not None:
            # RFC 4028 §7.2: the peer does not do timers; we refresh on our own interval.
            requested = session_expires_of(entry.request)
            assert requested is not None
            active = ActiveSessionTimer(requested.interval, we_refresh=True)
        else:
            return
        self._start_session_timer(active, now)

    def _start_session_timer(self, active: ActiveSessionTimer, now: float) -> None:
        self.session_timer = active
        self._timers.pop("session_refresh", None)
        self._timers.pop("session_expiry", None)
        if active.we_refresh:
            self._timers["session_refresh"] = now + active.refresh_after
        else:
            self._timers["session_expiry"] = now + active.expire_after
        self._events.append(SessionRefreshed(active.interval, active.we_refresh))

    def refresh(self, now: float) -> None:
        """Send a session refresh: UPDATE without SDP when the peer allows it, else a re-INVITE
        carrying our current SDP unchanged (RFC 4028 §7.4)."""
        if self.state is not S.CONFIRMED:
            raise LocalProtocolError(f"{self.role} invite session in state {self.state.name} cannot refresh")
        if any(entry.purpose in ("reinvite", "update") for entry in self._client.values()):
            return  # the transaction in progress refreshes the session when it succeeds
        if "UPDATE" in self.peer_allows or self.negotiator.local is None:
            self._send_modify("UPDATE", now, None, refresh=True)
        elif self._pending_2xx is None and self.negotiator.state is OfferAnswerState.IDLE:
            self._send_modify("INVITE", now, self.negotiator.local, refresh=True)

    # ================================================================== ending

    def end_session(self, now: float, status_code: int | None = None, reason: Reason | None = None) -> None:
        """Hang up whatever the state (pjsip's ``inv_end_session``): CANCEL a pending INVITE, reject
        an incoming one (603 unless ``status_code``), BYE an established session."""
        state = self.state
        if state is S.DISCONNECTED:
            return
        if state is S.NULL:
            self._terminate("abandon", "abandoned", status_code or 487, False, reason)
        elif self.role == "uac" and state in (S.CALLING, S.EARLY):
            self.cancel(now, reason)
        elif self.role == "uas" and state in (S.INCOMING, S.EARLY):
            self.answer(status_code or 603, now)
        elif self.role == "uas" and state is S.CONNECTING:
            self._bye_wanted = True  # §15: the callee waits for the ACK before its BYE
            self._bye_after_ack = reason
        else:
            self._send_bye(reason, now)

    def _send_bye(
        self, cause: Reason | None, now: float, *, text: str = "local hangup", code: int = 200
    ) -> None:
        dialog = self.dialog
        assert dialog is not None
        headers = [("Reason", str(cause))] if cause is not None else []
        bye = dialog.create_request("BYE", self.local_address, headers=headers)
        self._send_request(bye, _ClientRequest(bye, "bye", dialog))
        self._terminate("send_bye", text, code, False, cause)

    # ================================================================== timers

    def _on_timer(self, name: str, now: float) -> None:
        if name == "2xx_retransmit":
            pending = self._pending_2xx
            if pending is None or pending.next_send is None:
                return
            self._send_response(pending.response, pending.transaction, retransmission=True)
            pending.interval = min(2 * pending.interval, self.timers.t2)
            pending.next_send = now + pending.interval
            self._arm_2xx_timers()
        elif name == "ack_wait":
            pending = self._pending_2xx
            self._pending_2xx = None
            self._arm_2xx_timers()
            if pending is None:
                return
            cause = Reason("SIP", 408, "no ACK for the 2xx")
            if pending.initial and self._can("ack_timeout"):
                # §13.3.1.4: the dialog is confirmed but the session ends with a BYE.
                assert self.dialog is not None
                bye = self.dialog.create_request("BYE", self.local_address, headers=[("Reason", str(cause))])
                self._send_request(bye, _ClientRequest(bye, "bye", self.dialog))
                self._terminate("ack_timeout", "ACK not received", 408, True, cause)
            elif self.state is S.CONFIRMED:
                self._send_bye(cause, now, text="ACK not received", code=408)
        elif name == "glare_retry":
            glare = self._glare
            self._glare = None
            if glare is None or self.state is not S.CONFIRMED:
                return
            try:
                self._send_modify(glare.method, now, glare.offer)
            except LocalProtocolError:
                # Something else took over the dialog meanwhile (the peer's own offer): that's fine.
                pass
        elif name == "session_refresh":
            if self.state is not S.CONFIRMED or self.session_timer is None:
                return
            if self.auto_refresh:
                self.refresh(now)
            else:
                self._events.append(RefreshNeeded(self.session_timer.interval))
        elif name == "session_expiry":
            if self.state is S.CONFIRMED:
                self._send_bye(
                    Reason("SIP", 408, "session timer expired"), now, text="session expired", code=408
                )
        elif name == "cancel_guard":
            if self._can("give_up"):
                self._terminate("give_up", "no final response after CANCEL", 408, True, None)
