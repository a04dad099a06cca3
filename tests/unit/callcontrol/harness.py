"""A switchboard for the pure Call: phones made of InviteSessions, fake media, in-memory repositories.

Every SIP message crosses a serialize → parse round trip. Actions are executed the way the asyncio
service executes them (the same ``run_media`` / ``run_persist`` coroutines, run to completion here
without an event loop: the fakes never suspend). The clock is ``Switchboard.now``, moved by hand.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from media.control import LocalMedia
from signaling.callcontrol.actions import (
    Action,
    CreateEndpoint,
    MediaAction,
    PersistAction,
    ReportTrunkFailover,
    ResolveRoute,
    Route,
    RouteQuery,
    SendSip,
)
from signaling.callcontrol.call import Call, CallEnvironment, CallerIdentity
from signaling.callcontrol.config import CallControlConfig
from signaling.callcontrol.executor import run_media, run_persist
from signaling.callcontrol.fakes import RecordingMediaControl
from signaling.sdp import (
    Direction,
    OfferStream,
    Origin,
    SessionDescription,
    create_answer,
    create_offer,
)
from signaling.sip.dialog import LocalAddress
from signaling.sip.invite import (
    InviteEvent,
    InviteSession,
    Outgoing,
    SendAck,
    SendRequest,
    SendResponse,
)
from signaling.sip.message import Request, Response, parse_message, serialize
from signaling.sip.routing import TransportAddress
from signaling.sip.timers import TimerSettings
from storage.memory.sql_domains import MemoryCallRepository, MemoryCdrRepository

SERVER = LocalAddress("UDP", "192.0.2.1", 5060)
TIMERS = TimerSettings(t1=0.5, t2=4.0)
EPOCH = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (in-memory fakes) to completion, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise RuntimeError("the coroutine suspended: not an in-memory fake")


def wire(message: Request | Response) -> Any:
    return parse_message(serialize(message))


class Phone:
    """One SIP user agent at ``host:port`` holding one invite session (a caller or a callee)."""

    def __init__(
        self, name: str, host: str, port: int, media_port: int, codecs: tuple[str, ...] = ()
    ) -> None:
        self.name = name
        self.address = LocalAddress("UDP", host, port)
        self.media_port = media_port
        self.codecs = codecs
        self.session: InviteSession | None = None
        self.events: list[InviteEvent] = []
        self.received: list[Request] = []
        self.auto_answer: int | None = None  # answer a new INVITE with this status at once

    @property
    def uri(self) -> str:
        return f"sip:{self.name}@{self.address.host}:{self.address.port}"

    def offer(self, direction: Direction = Direction.SENDRECV) -> SessionDescription:
        from signaling.sdp import DEFAULT_CODECS, Codec

        codecs = DEFAULT_CODECS
        if self.codecs:
            codecs = tuple(c for c in DEFAULT_CODECS if c.name in self.codecs) or (
                Codec("G729", 8000, 1, 18),
            )
        return create_offer(
            Origin("-", "1", 1, self.address.host),
            self.address.host,
            [OfferStream(self.media_port, codecs=codecs, direction=direction)],
        )

    def answerer(self, offer: SessionDescription) -> SessionDescription:
        return create_answer(
            offer,
            origin=Origin("-", "2", 1, self.address.host),
            address=self.address.host,
            port=self.media_port,
        )

    def drain(self) -> list[InviteEvent]:
        assert self.session is not None
        while (event := self.session.next_event()) is not None:
            self.events.append(event)
        return self.events

    def event_types(self) -> list[str]:
        self.drain()
        return [type(event).__name__ for event in self.events]


class FailingCallRepository(MemoryCallRepository):
    """Fails every write named in ``failing`` (the call must go on)."""

    def __init__(self, failing: set[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failing = failing

    def __getattribute__(self, name: str) -> Any:
        failing = object.__getattribute__(self, "failing")
        if name in failing:

            async def broken(*args: Any, **kwargs: Any) -> Any:
                raise ConnectionError(f"{name}: database is gone")

            return broken
        return object.__getattribute__(self, name)


class Switchboard:
    def __init__(
        self,
        route: Callable[[RouteQuery], Route],
        *,
        config: CallControlConfig | None = None,
        calls_repo: MemoryCallRepository | None = None,
        caller: CallerIdentity | None = None,
    ) -> None:
        self.now = 0.0
        self.route = route
        self.config = config or CallControlConfig(no_answer_timeout=30.0)
        self.media = RecordingMediaControl()
        self.calls_repo = calls_repo or MemoryCallRepository(node_id="test-node", clock=lambda: EPOCH)
        self.cdrs = MemoryCdrRepository(node_id="test-node", clock=lambda: EPOCH)
        self.caller = caller or CallerIdentity(username="alice", account_id=uuid.uuid4())
        self.env = CallEnvironment(
            config=self.config,
            local_addresses={"udp": SERVER},
            to_datetime=lambda now: EPOCH + dt.timedelta(seconds=now),
            timers=TIMERS,
        )
        self.phones: dict[tuple[str, int], Phone] = {}
        self.call: Call | None = None
        self.persist_errors: list[tuple[Action, Exception]] = []
        self.queries: list[RouteQuery] = []
        self.held_routes: list[ResolveRoute] = []
        self.hold_routing = False
        self.sip_log: list[str] = []

    # -- phones --------------------------------------------------------------------------------

    def phone(self, name: str, host: str, port: int = 5060, media_port: int = 40000, **kw: Any) -> Phone:
        phone = Phone(name, host, port, media_port, **kw)
        self.phones[(host, port)] = phone
        return phone

    def dial(self, caller: Phone, callee_uri: str, *, offer: bool = True, max_forwards: int = 70) -> None:
        caller.session = InviteSession.create_uac(
            from_uri=f"<sip:{caller.name}@uc-edge.local>",
            to_uri=f"<{callee_uri}>",
            request_uri=callee_uri,
            local_address=caller.address,
            local_contact=f"<{caller.uri}>",
            offer=caller.offer() if offer else None,
            max_forwards=max_forwards,
            timers=TIMERS,
            answerer=caller.answerer,
        )
        caller.session.send_invite(self.now)
        self.settle()

    # -- moving messages -----------------------------------------------------------------------

    def settle(self) -> None:
        """Deliver everything queued until nothing moves."""
        moved = True
        while moved:
            moved = False
            for phone in list(self.phones.values()):
                if phone.session is not None:
                    for out in phone.session.messages_to_send():
                        moved = True
                        self._from_phone(phone, out)
            if self.call is not None:
                actions = self.call.actions()
                if actions:
                    moved = True
                    for action in actions:
                        self._execute(action)

    def _from_phone(self, phone: Phone, out: Outgoing) -> None:
        if isinstance(out, SendResponse):
            response = wire(out.response)
            self.sip_log.append(f"{phone.name} -> {response.code} {response.headers['CSeq']}")
            assert self.call is not None
            self.call.handle_response(response, self.now)
            return
        request = wire(out.request)  # type: ignore[union-attr]
        self.sip_log.append(f"{phone.name} -> {request.method}")
        if request.method == "INVITE" and self.call is None:
            self.call = Call(
                request,
                transaction=("tx", request.method),
                source=TransportAddress("udp", phone.address.host, phone.address.port),
                now=self.now,
                caller=self.caller,
                env=self.env,
            )
        elif request.method == "CANCEL":
            assert self.call is not None
            self.call.handle_cancel(request, ("tx", "CANCEL"), self.now)
        else:
            assert self.call is not None
            transaction = None if isinstance(out, SendAck) else ("tx", request.method)
            handled = self.call.handle_request(request, transaction, self.now)
            assert handled, f"call did not take {request.method}"

    def _execute(self, action: Action) -> None:
        assert self.call is not None
        if isinstance(action, SendSip):
            self._to_phone(action)
        elif isinstance(action, ResolveRoute):
            self.queries.append(action.query)
            if self.hold_routing:
                self.held_routes.append(action)
            else:
                self.call.handle_route(action.step, self.route(action.query), self.now)
        elif isinstance(action, CreateEndpoint):
            try:
                local = run(run_media(action, self.media, str(self.call.call_id)))
            except Exception as error:
                self.call.handle_endpoint(action.leg_id, None, self.now, error=str(error))
            else:
                assert isinstance(local, LocalMedia)
                self.call.handle_endpoint(action.leg_id, local, self.now)
        elif isinstance(action, MediaAction):
            run(run_media(action, self.media, str(self.call.call_id)))
        elif isinstance(action, ReportTrunkFailover):
            self.call.config.trunk_addresses.note_failover(action.failover)  # as the service does
        elif isinstance(action, PersistAction):
            try:
                run(run_persist(action, self.calls_repo, self.cdrs))
            except Exception as error:
                self.persist_errors.append((action, error))

    def _to_phone(self, action: SendSip) -> None:
        out = action.message
        if isinstance(out, SendResponse):
            response = wire(out.response)
            caller = self._phone_for_call_id(response.headers["Call-ID"])
            self.sip_log.append(f"-> {caller.name} {response.code} {response.headers['CSeq']}")
            assert caller.session is not None
            caller.session.receive_response(response, self.now)
            return
        assert isinstance(out, SendRequest | SendAck) and action.destination is not None
        phone = self.phones[(action.destination.host, action.destination.port)]
        request = wire(out.request)
        self.sip_log.append(f"-> {phone.name} {request.method}")
        phone.received.append(request)
        if request.method == "INVITE" and phone.session is None:
            phone.session = InviteSession.create_uas(
                request,
                local_address=phone.address,
                local_contact=f"<{phone.uri}>",
                transaction=("tx", "INVITE"),
                timers=TIMERS,
                answerer=phone.answerer,
            )
            if phone.auto_answer is not None:
                phone.session.answer(phone.auto_answer, self.now)
        elif request.method == "CANCEL":
            assert phone.session is not None
            phone.session.receive_cancel(request, self.now, transaction=("tx", "CANCEL"))
        elif phone.session is not None:
            phone.session.receive_request(request, self.now, transaction=("tx", request.method))

    def _phone_for_call_id(self, call_id: str) -> Phone:
        for phone in self.phones.values():
            if phone.session is not None and phone.session.call_id == call_id:
                return phone
        raise AssertionError(f"no phone has Call-ID {call_id}")

    # -- time ----------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every session and call timer due on the way."""
        until = self.now + seconds
        while True:
            deadlines = [
                deadline
                for deadline in (
                    *(p.session.get_timer() for p in self.phones.values() if p.session is not None),
                    self.call.get_timer() if self.call is not None else None,
                )
                if deadline is not None and deadline <= until
            ]
            if not deadlines:
                self.now = until
                self.settle()
                return
            self.now = max(self.now, min(deadlines))
            for phone in self.phones.values():
                if (
                    phone.session is not None
                    and (t := phone.session.get_timer()) is not None
                    and t <= self.now
                ):
                    phone.session.handle_timer(self.now)
            if self.call is not None and (t := self.call.get_timer()) is not None and t <= self.now:
                self.call.handle_timer(self.now)
            self.settle()

    # -- repository views ----------------------------------------------------------------------

    def session_row(self) -> Any:
        assert self.call is not None
        return run(self.calls_repo.get_call(self.call.call_id))

    def legs(self) -> list[Any]:
        assert self.call is not None
        return list(run(self.calls_repo.list_legs(self.call.call_id)))

    def attempts(self) -> list[Any]:
        assert self.call is not None
        return list(run(self.calls_repo.list_routing_attempts(self.call.call_id)))

    def cdr(self) -> Any:
        assert self.call is not None
        return run(self.cdrs.cdr_for_call(self.call.call_id))

    def call_event_types(self) -> list[str]:
        return [envelope["type"] for envelope in self.calls_repo.outbox.envelopes]
