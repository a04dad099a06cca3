"""Call control end to end on loopback: two SIP phones (each a SipEndpoint + hub driving an InviteSession)
call each other through the real CallControlService, with the real PostgreSQL call and CDR repositories
(fresh migrated databases) and the in-memory media fake. Checks the rows in call_sessions / call_legs /
call_routing / cdr_records and the events in each domain's outbox.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from signaling.callcontrol import service as callcontrol_service
from signaling.callcontrol.call import CallEnvironment
from signaling.callcontrol.config import CallControlConfig
from signaling.callcontrol.fakes import RecordingMediaControl
from signaling.callcontrol.router import CallRouter
from signaling.callcontrol.service import CallControlService
from signaling.flood import FloodConfig, FloodGuard
from signaling.sdp import OfferStream, Origin, SessionDescription, create_answer, create_offer
from signaling.sip.dialog import LocalAddress
from signaling.sip.digest import Challenge, DigestAuthenticator, build_authorization, ha1
from signaling.sip.endpoint import SipEndpoint
from signaling.sip.events import Event, RequestReceived, ResponseReceived, TransactionKey
from signaling.sip.invite import (
    Answered,
    InviteEvent,
    InviteSession,
    InviteState,
    SendAck,
    SendRequest,
    SendResponse,
    Terminated,
)
from signaling.sip.routing import TransportAddress
from signaling.sip.timers import TimerSettings
from signaling.transport.application import SipRouter
from signaling.transport.hub import SipTransportHub
from storage.memory.hot import MemoryLocationStore
from storage.ports import Binding, SipCredentials
from storage.ports import TransportAddress as PortsAddress
from storage.postgres.calls import PgCallRepository
from storage.postgres.cdr import PgCdrRepository
from tests.contract.pg_fixtures import open_pool, outbox_events, pg_database, pg_templates  # noqa: F401

REALM = "uc-edge"
TIMERS = TimerSettings(t1=0.1, t2=0.4)
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret"}
ACCOUNTS = {name: uuid.uuid4() for name in PASSWORDS}


async def lookup(username: str, realm: str) -> SipCredentials | None:
    if username not in PASSWORDS:
        return None
    password = PASSWORDS[username]
    return SipCredentials(
        account_id=ACCOUNTS[username],
        username=username,
        realm=realm,
        ha1_md5=ha1(username, realm, password),
        ha1_sha256="",
        ha1_sha512_256=None,
    )


class Phone:
    """A SIP phone on loopback: its own endpoint and hub, one invite session at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.endpoint = SipEndpoint(timers=TIMERS)
        self.hub = SipTransportHub(self.endpoint, application=self)
        self.session: InviteSession | None = None
        self.events: list[InviteEvent] = []
        self.answer_with: list[int] = []  # statuses a callee sends to a new INVITE
        self.changed = asyncio.Event()
        self.server: tuple[str, int] = ("127.0.0.1", 0)
        self.password = PASSWORDS.get(name, "")
        self.media_port = 40000 if name == "alice" else 42000

    async def start(self) -> None:
        await self.hub.start("127.0.0.1", 0, None)

    @property
    def address(self) -> LocalAddress:
        host, port = self.endpoint.local_addresses["udp"]
        return LocalAddress("UDP", host, port)

    @property
    def contact(self) -> str:
        return f"sip:{self.name}@{self.address.host}:{self.address.port}"

    def answerer(self, offer: SessionDescription) -> SessionDescription:
        return create_answer(
            offer, origin=Origin("-", "9", 1, "127.0.0.1"), address="127.0.0.1", port=self.media_port
        )

    def call(self, callee: str, headers: list[tuple[str, str]] | None = None, cseq: int = 1) -> None:
        offer = create_offer(Origin("-", "1", 1, "127.0.0.1"), "127.0.0.1", [OfferStream(self.media_port)])
        self.session = InviteSession.create_uac(
            from_uri=f"<sip:{self.name}@uc-edge.local>",
            to_uri=f"<sip:{callee}@uc-edge.local>",
            request_uri=f"sip:{callee}@uc-edge.local",
            local_address=self.address,
            local_contact=f"<{self.contact}>",
            offer=offer,
            timers=TIMERS,
            answerer=self.answerer,
            cseq=cseq,
            headers=headers or [],
        )
        self.session.send_invite(self.hub.now())
        self.flush()

    # -- the hub's application -----------------------------------------------------------------

    def on_event(self, event: Event, hub: SipTransportHub) -> None:
        now = hub.now()
        if isinstance(event, RequestReceived):
            request = event.request
            if (
                request.method == "INVITE"
                and (self.session is None or self.session.terminated)
                and not request.headers.get("To", "").count("tag=")
            ):
                self.session = InviteSession.create_uas(
                    request,
                    local_address=self.address,
                    local_contact=f"<{self.contact}>",
                    transaction=event.transaction,
                    retransmit_2xx=False,
                    timers=TIMERS,
                    answerer=self.answerer,
                )
                for status in self.answer_with:
                    self.session.answer(status, now)
            elif self.session is not None and event.cancels is not None:
                self.session.receive_cancel(
                    request, now, transaction=event.transaction, respond_to_cancel=False
                )
            elif self.session is not None:
                self.session.receive_request(request, now, transaction=event.transaction)
        elif isinstance(event, ResponseReceived) and self.session is not None:
            if event.response.code == 407 and self.session.state in (InviteState.CALLING, InviteState.EARLY):
                self._retry_with_auth(event)
                return
            self.session.receive_response(event.response, now)
        self.flush()

    def _retry_with_auth(self, event: ResponseReceived) -> None:
        assert self.session is not None and self.session.invite is not None
        old = self.session
        old.receive_response(event.response, self.hub.now())
        challenge = Challenge.parse(event.response.headers.getlist("Proxy-Authenticate")[-1])
        uri = "sip:" + old.invite.headers["To"].split("sip:", 1)[1].split(">", 1)[0]
        credentials = build_authorization(
            challenge,
            username=self.name,
            method="INVITE",
            uri=uri,
            cnonce="c0ffee",
            password=self.password,
        )
        callee = uri.split(":", 1)[1].split("@", 1)[0]
        self.call(callee, [("Proxy-Authorization", credentials.header_value())], cseq=2)

    def flush(self) -> None:
        session = self.session
        if session is None:
            return
        server = TransportAddress("udp", *self.server)
        for out in session.messages_to_send():
            if isinstance(out, SendRequest):
                self.hub.send_request(out.request, server)
            elif isinstance(out, SendAck):
                self.hub.send_stateless(out.request, server)
            elif isinstance(out, SendResponse):
                assert isinstance(out.transaction, TransactionKey)
                self.hub.respond(out.transaction, out.response)
        while (event := session.next_event()) is not None:
            self.events.append(event)
        self.changed.set()

    def tick(self) -> None:
        if self.session is not None and (deadline := self.session.get_timer()) is not None:
            if deadline <= self.hub.now():
                self.session.handle_timer(self.hub.now())
                self.flush()

    async def wait_for(self, check: Callable[[], bool], within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while not check():
            self.tick()
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: condition not met; events {self.events}")
            await asyncio.sleep(0.01)


class Server:
    def __init__(self, calls: PgCallRepository, cdrs: PgCdrRepository, location: MemoryLocationStore) -> None:
        self.endpoint = SipEndpoint(timers=TIMERS)
        self.router = SipRouter()
        self.hub = SipTransportHub(self.endpoint, application=self.router)
        self.media = RecordingMediaControl(address="127.0.0.1")
        self.config = CallControlConfig(
            local_domains=frozenset({"uc-edge.local", "127.0.0.1"}), no_answer_timeout=3.0
        )
        self.calls, self.cdrs, self.location = calls, cdrs, location
        self.service: CallControlService | None = None
        self.flood = FloodGuard(FloodConfig(max_auth_failures_per_user=2))

    async def start(self) -> None:
        await self.hub.start("127.0.0.1", 0, None)
        host, port = self.endpoint.local_addresses["udp"]
        env = CallControlService.environment(
            CallEnvironment(self.config, {"udp": LocalAddress("UDP", host, port)}, timers=TIMERS),
            self.hub.now,
        )
        self.service = CallControlService(
            hub=self.hub,
            media=self.media,
            calls=self.calls,
            cdrs=self.cdrs,
            router=CallRouter(self.config, location=self.location, credentials=lookup),
            env=env,
            authenticator=DigestAuthenticator(REALM, b"0123456789abcdef0123"),
            credentials=lookup,
            flood=self.flood,
        )
        self.service.install(self.router)
        await self.service.start()

    async def stop(self) -> None:
        assert self.service is not None
        await self.service.stop()
        await self.hub.stop()


@pytest.fixture
async def pools(
    pg_database: Callable[[str], Awaitable[str]],  # noqa: F811
) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    calls_pool = await open_pool(await pg_database("calls"))
    cdr_pool = await open_pool(await pg_database("cdr"))
    try:
        yield calls_pool, cdr_pool
    finally:
        await calls_pool.close()
        await cdr_pool.close()


@pytest.fixture
async def network(pools: tuple[asyncpg.Pool, asyncpg.Pool]) -> AsyncIterator[tuple[Server, Phone, Phone]]:
    calls_pool, cdr_pool = pools
    location = MemoryLocationStore()
    server = Server(
        PgCallRepository(calls_pool, node_id="it-node"),
        PgCdrRepository(cdr_pool, node_id="it-node"),
        location,
    )
    alice, bob = Phone("alice"), Phone("bob")
    await server.start()
    for phone in (alice, bob):
        await phone.start()
        phone.server = server.endpoint.local_addresses["udp"]
    host, port = bob.endpoint.local_addresses["udp"]
    await location.save(
        "sip:bob@uc-edge.local",
        [
            Binding(
                aor="sip:bob@uc-edge.local",
                contact_uri=bob.contact,
                expires_at=time.time() + 600,
                received=PortsAddress("udp", host, port),
            )
        ],
        [],
        time.time(),
    )
    try:
        yield server, alice, bob
    finally:
        await alice.hub.stop()
        await bob.hub.stop()
        await server.stop()


async def rows(pool: asyncpg.Pool, query: str, *args: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in await pool.fetch(query, *args)]


async def test_call_through_the_b2bua_writes_sessions_legs_routing_cdr_and_events(
    network: tuple[Server, Phone, Phone], pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    server, alice, bob = network
    calls_pool, cdr_pool = pools
    bob.answer_with = [180, 200]
    alice.call("bob")
    await alice.wait_for(lambda: any(isinstance(e, Answered) for e in alice.events))
    await bob.wait_for(lambda: bob.session is not None and bob.session.state is InviteState.CONFIRMED)
    assert server.service is not None and server.service.stats.auth_challenges == 1
    # Media anchored: both phones see the server's endpoints, bridged in the (fake) media plane.
    assert alice.session.negotiator.remote.media[0].port != bob.session.negotiator.remote.media[0].port
    assert len(server.media.connections) == 1
    await asyncio.sleep(0.2)
    bob.session.end_session(bob.hub.now())
    bob.flush()
    await alice.wait_for(lambda: alice.session.state is InviteState.DISCONNECTED)
    await server.service.idle()
    await alice.wait_for(lambda: server.service.active_calls == 0)
    await server.service.idle()

    (session,) = await rows(calls_pool, "SELECT * FROM call_sessions")
    assert session["status"] == "ended" and session["termination_cause"] == "normal_clearing"
    assert session["ended_by"] == "callee" and session["initiator_account_id"] == ACCOUNTS["alice"]
    assert session["answered_at"] is not None
    legs = await rows(calls_pool, "SELECT * FROM call_legs ORDER BY started_at, direction")
    assert sorted((leg["direction"], leg["status"]) for leg in legs) == [
        ("inbound", "terminated"),
        ("outbound", "terminated"),
    ]
    (attempt,) = await rows(calls_pool, "SELECT * FROM call_routing")
    assert (attempt["step"], attempt["target"], attempt["result"], attempt["sip_status"]) == (
        1,
        bob.contact,
        "answered",
        200,
    )
    (cdr,) = await rows(cdr_pool, "SELECT * FROM cdr_records")
    assert cdr["call_id"] == session["call_id"] and cdr["correlation_id"] == session["correlation_id"]
    assert cdr["termination_cause"] == "normal_clearing" and cdr["account_id"] == ACCOUNTS["alice"]
    assert cdr["duration_seconds"] >= 1
    call_events = await outbox_events(calls_pool)
    events = [row["event_type"] for row in call_events]
    assert events[0] == "call.started" and events[-1] == "call.ended"
    assert {"call.leg.created", "call.leg.state_changed", "call.routing.attempted", "call.answered"} <= set(
        events
    )
    assert all(row["envelope"]["call_id"] == str(session["call_id"]) for row in call_events)
    assert [row["event_type"] for row in await outbox_events(cdr_pool)] == ["cdr.created"]
    assert server.media.live() == []


async def test_busy_callee_and_unknown_user(
    network: tuple[Server, Phone, Phone], pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    server, alice, bob = network
    calls_pool, _ = pools
    bob.answer_with = [486]
    alice.call("bob")
    await alice.wait_for(lambda: any(isinstance(e, Terminated) for e in alice.events))
    (end,) = [e for e in alice.events if isinstance(e, Terminated)]
    assert end.status_code == 486
    alice.events.clear()
    alice.call("nobody")
    await alice.wait_for(lambda: any(isinstance(e, Terminated) for e in alice.events))
    (end,) = [e for e in alice.events if isinstance(e, Terminated)]
    assert end.status_code == 404
    assert server.service is not None
    await server.service.idle()
    causes = sorted(r["termination_cause"] for r in await rows(calls_pool, "SELECT * FROM call_sessions"))
    assert causes == ["busy", "not_found"]
    results = sorted(
        (r["result"], r["sip_status"]) for r in await rows(calls_pool, "SELECT * FROM call_routing")
    )
    assert results == [("busy", 486), ("not_found", 404)]


async def test_cancel_while_ringing(
    network: tuple[Server, Phone, Phone], pools: tuple[asyncpg.Pool, asyncpg.Pool]
) -> None:
    server, alice, bob = network
    calls_pool, cdr_pool = pools
    bob.answer_with = [180]
    alice.call("bob")
    await alice.wait_for(lambda: alice.session is not None and alice.session.state is InviteState.EARLY)
    await bob.wait_for(lambda: bob.session is not None and bob.session.state is InviteState.EARLY)
    alice.session.end_session(alice.hub.now())
    alice.flush()
    await alice.wait_for(lambda: alice.session.state is InviteState.DISCONNECTED)
    await bob.wait_for(lambda: bob.session.state is InviteState.DISCONNECTED)
    (end,) = [e for e in alice.events if isinstance(e, Terminated)]
    assert end.status_code == 487
    assert server.service is not None
    await server.service.idle()
    (session,) = await rows(calls_pool, "SELECT * FROM call_sessions")
    assert session["termination_cause"] == "cancelled" and session["answered_at"] is None
    (attempt,) = await rows(calls_pool, "SELECT * FROM call_routing")
    assert attempt["result"] == "cancelled"
    (cdr,) = await rows(cdr_pool, "SELECT * FROM cdr_records")
    assert cdr["answered_at"] is None and cdr["termination_cause"] == "cancelled"


async def test_failed_invite_auth_is_reported_to_the_flood_guard_and_blocks_the_user(
    network: tuple[Server, Phone, Phone],
) -> None:
    server, alice, _bob = network
    assert server.service is not None
    alice.password = "not-her-password"  # every retry is answered 407 again, until the guard blocks her
    alice.call("bob")
    await alice.wait_for(lambda: any(isinstance(e, Terminated) for e in alice.events), within=10)
    ended = [e for e in alice.events if isinstance(e, Terminated)]
    assert ended[-1].status_code == 403, alice.events
    assert server.flood.stats.auth_failures == 3  # the third failure went over the limit of 2
    assert server.flood.stats.auth_bans >= 1
    assert server.service.stats.auth_blocked == 1

    alice.password = PASSWORDS["alice"]  # the right password no longer helps while she is blocked
    alice.events.clear()
    alice.call("bob")
    await alice.wait_for(lambda: any(isinstance(e, Terminated) for e in alice.events), within=10)
    assert [e for e in alice.events if isinstance(e, Terminated)][-1].status_code == 403
    assert server.service.stats.auth_blocked == 2
    assert server.service.stats.calls_started == 0


async def test_a_finished_call_is_freed_without_the_garbage_collector(
    network: tuple[Server, Phone, Phone],
) -> None:
    # A finished call's objects must go with their last reference: reference cycles would leave ~175
    # objects a call for the collector, and at hundreds of calls a second its young collections slow down.
    server, alice, bob = network
    bob.answer_with = [200]
    gc.collect()
    gc.disable()
    try:
        alice.call("bob")
        await alice.wait_for(lambda: any(isinstance(e, Answered) for e in alice.events))
        assert server.service is not None
        (running,) = server.service._running.values()
        call = weakref.ref(running.call)
        sessions = [weakref.ref(leg.session) for leg in running.call.legs.values() if leg.session is not None]
        queue = weakref.ref(running.persist)
        del running
        assert len(sessions) == 2
        bob.session.end_session(bob.hub.now())
        bob.flush()
        await alice.wait_for(lambda: alice.session.state is InviteState.DISCONNECTED)
        await alice.wait_for(lambda: server.service.active_calls == 0)
        await server.service.idle()
        await asyncio.sleep(0)  # the last queue callbacks
        assert call() is None, gc.get_referrers(call())
        assert all(session() is None for session in sessions)
        assert queue() is None
    finally:
        gc.enable()


async def test_finished_calls_are_let_go_once_their_writes_are_done(
    network: tuple[Server, Phone, Phone], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A call usually ends with writes still queued, so the service keeps it until they are done. It must
    # let it go then, without anyone calling idle() (a running node never does): the set once kept every
    # call a node ever ran. Pruned from a size of 1 here, so a handful of calls shows it.
    server, alice, bob = network
    service = server.service
    assert service is not None
    monkeypatch.setattr(callcontrol_service, "DRAINING_PRUNE_MIN", 1)
    service._prune_draining_at = 1
    bob.answer_with = [200]
    sizes = []
    for number in range(1, 5):
        alice.call("bob", cseq=number)
        await alice.wait_for(lambda n=number: sum(isinstance(e, Answered) for e in alice.events) == n)
        assert bob.session is not None
        bob.session.end_session(bob.hub.now())
        bob.flush()
        await alice.wait_for(lambda: service.active_calls == 0)
        # The writes of this call finish on their own (no idle(): that prunes by itself).
        for running in list(service._draining):
            await running.persist.wait()
        sizes.append(len(service._draining))
    assert service.stats.calls_ended == 4
    # Each call's _forget finds the earlier calls' writes done and lets them go: only the latest call (whose
    # writes were queued when it ended) can still be in the set.
    assert max(sizes) <= 1, sizes


async def test_a_finished_call_is_freed_while_its_writes_still_wait(
    network: tuple[Server, Phone, Phone],
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The writes trail the signalling (~1 s at load); what waits for them is the call's queues, not the
    # call: its legs, sessions and messages go when it is forgotten, and the writes still all land.
    server, alice, bob = network
    service = server.service
    assert service is not None
    gate = asyncio.Event()
    real_write = service._write

    async def held_write(context: dict[str, Any], call_id: uuid.UUID, batch: list[Any]) -> None:
        await gate.wait()
        await real_write(context, call_id, batch)

    monkeypatch.setattr(service, "_write", held_write)
    bob.answer_with = [200]
    alice.call("bob")
    await alice.wait_for(lambda: any(isinstance(e, Answered) for e in alice.events))
    (running,) = service._running.values()
    call = weakref.ref(running.call)
    call_id = running.call.call_id
    del running
    assert bob.session is not None
    bob.session.end_session(bob.hub.now())
    bob.flush()
    await alice.wait_for(lambda: service.active_calls == 0)
    (draining,) = service._draining
    assert not draining.settled  # its writes are held at the gate
    assert call() is None, gc.get_referrers(call())
    gate.set()
    await service.idle()
    assert not service._draining
    (row,) = await rows(pools[0], "SELECT status FROM call_sessions WHERE call_id = $1", call_id)
    assert row["status"] == "ended"
