"""The B2BUA's repository writes (``signaling.callcontrol.persistence``) against the in-memory fakes and
the real PostgreSQL repositories: coalesced into one transaction, a refused write does not take the
valid ones with it, and an unreachable database delays the writes without losing any.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from signaling.callcontrol.actions import (
    PersistAction,
    RecordAnswer,
    RecordCallStart,
    RecordCdr,
    RecordEnd,
    RecordLeg,
    RecordLegState,
    RecordRouting,
)
from signaling.callcontrol.persistence import CallPersistence, WriteQueue
from storage.memory.sql_domains import MemoryCallRepository, MemoryCdrRepository, MemoryOutbox
from storage.ports import CallRepository, CdrRecord, CdrRepository, NewCall, NewCdr, NewLeg
from storage.postgres.calls import PgCallRepository
from storage.postgres.cdr import PgCdrRepository
from storage.postgres.connect import create_pool
from storage.postgres.errors import DatabaseUnavailable
from tests.contract.pg_fixtures import (  # noqa: F401
    open_pool,
    outbox_events,
    outbox_transactions,
    pg_database,
    pg_templates,
)

START = dt.datetime(2025, 6, 1, 9, 0, tzinfo=dt.UTC)
NODE = "writes-node"


@dataclasses.dataclass
class Counters:
    persist_failures: int = 0
    persist_retries: int = 0
    persist_batches: int = 0


@dataclasses.dataclass
class Backend:
    kind: str
    calls: CallRepository
    cdrs: CdrRepository
    calls_outbox: MemoryOutbox | asyncpg.Pool
    calls_dsn: str | None = None

    async def event_types(self, call_id: uuid.UUID) -> list[str]:
        rows = await outbox_events(self.calls_outbox)
        return [row["event_type"] for row in rows if row["partition_key"] == str(call_id)]

    async def transactions(self) -> list[dict[str, list[str]]] | None:
        """PostgreSQL: per outbox row (one per transaction, in order), its event types by call; the fake
        keeps no transactions (None)."""
        if not isinstance(self.calls_outbox, asyncpg.Pool):
            return None
        await outbox_transactions(self.calls_outbox)  # checks each row's event_count and partition_keys
        by_row: dict[int, dict[str, list[str]]] = {}
        for event in await self.calls_outbox.fetch(
            "SELECT outbox_id, partition_key, event_type FROM outbox_events ORDER BY outbox_id, position"
        ):
            by_row.setdefault(event["outbox_id"], {}).setdefault(event["partition_key"], []).append(
                event["event_type"]
            )
        return list(by_row.values())


@pytest.fixture(params=["memory", "postgres"])
async def backend(
    request: pytest.FixtureRequest,
    pg_database: Callable[[str], Awaitable[str]],  # noqa: F811
) -> AsyncIterator[Backend]:
    if request.param == "memory":
        calls = MemoryCallRepository(node_id=NODE)
        yield Backend("memory", calls, MemoryCdrRepository(node_id=NODE), calls.outbox)
        return
    calls_dsn = await pg_database("calls")
    calls_pool = await open_pool(calls_dsn)
    cdr_pool = await open_pool(await pg_database("cdr"))
    try:
        yield Backend(
            "postgres",
            PgCallRepository(calls_pool, node_id=NODE),
            PgCdrRepository(cdr_pool, node_id=NODE),
            calls_pool,
            calls_dsn,
        )
    finally:
        await calls_pool.close()
        await cdr_pool.close()


@dataclasses.dataclass
class OneCall:
    """The actions of one answered and ended call, as the B2BUA queues them."""

    call_id: uuid.UUID = dataclasses.field(default_factory=uuid.uuid4)
    correlation_id: uuid.UUID = dataclasses.field(default_factory=uuid.uuid4)
    caller_leg: uuid.UUID = dataclasses.field(default_factory=uuid.uuid4)
    callee_leg: uuid.UUID = dataclasses.field(default_factory=uuid.uuid4)

    def at(self, seconds: float) -> dt.datetime:
        return START + dt.timedelta(seconds=seconds)

    def setup(self) -> list[PersistAction]:
        return [
            RecordCallStart(
                NewCall(
                    correlation_id=self.correlation_id,
                    direction="inbound",
                    from_uri="<sip:alice@edge.example>",
                    to_uri="<sip:bob@edge.example>",
                    call_id=self.call_id,
                    sip_call_id=f"{self.call_id.hex}@edge.example",
                    started_at=self.at(0),
                )
            ),
            RecordLeg(
                self.call_id,
                NewLeg("sip", "inbound", "198.51.100.7:5060", leg_id=self.caller_leg, started_at=self.at(0)),
            ),
            RecordLeg(
                self.call_id,
                NewLeg("sip", "outbound", "10.0.0.5:5060", leg_id=self.callee_leg, started_at=self.at(0)),
            ),
            RecordLegState(self.callee_leg, "early", None, self.at(0.1)),
            RecordLegState(self.caller_leg, "early", None, self.at(0.1)),
            RecordLegState(self.callee_leg, "confirmed", None, self.at(1)),
            RecordRouting(self.call_id, 1, "sip:bob@10.0.0.5", "answered", 200, self.callee_leg, self.at(1)),
            RecordAnswer(self.call_id, self.callee_leg, self.at(1)),
            RecordLegState(self.caller_leg, "confirmed", None, self.at(1)),
        ]

    def teardown(self) -> list[PersistAction]:
        return [
            RecordLegState(self.caller_leg, "terminated", "BYE", self.at(5)),
            RecordLegState(self.callee_leg, "terminated", None, self.at(5)),
            RecordEnd(self.call_id, "normal_clearing", 200, "caller", self.at(5)),
            RecordCdr(
                NewCdr(
                    call_id=self.call_id,
                    correlation_id=self.correlation_id,
                    caller="<sip:alice@edge.example>",
                    callee="<sip:bob@edge.example>",
                    direction="inbound",
                    started_at=self.at(0),
                    answered_at=self.at(1),
                    ended_at=self.at(5),
                    termination_cause="normal_clearing",
                    sip_status=200,
                )
            ),
        ]


CALL_EVENTS = [
    "call.started",
    "call.leg.created",
    "call.leg.created",
    "call.leg.state_changed",
    "call.leg.state_changed",
    "call.leg.state_changed",
    "call.routing.attempted",
    "call.answered",
    "call.leg.state_changed",
    "call.leg.state_changed",
    "call.leg.state_changed",
    "call.ended",
]


async def check_stored(backend: Backend, call: OneCall) -> None:
    """Everything of ``call`` is stored once, with its events in order."""
    session = await backend.calls.get_call(call.call_id)
    assert session is not None and session.status == "ended" and session.answered_leg_id == call.callee_leg
    legs = await backend.calls.list_legs(call.call_id)
    assert sorted((leg.leg_id, leg.status) for leg in legs) == sorted(
        [(call.caller_leg, "terminated"), (call.callee_leg, "terminated")]
    )
    assert [a.result for a in await backend.calls.list_routing_attempts(call.call_id)] == ["answered"]
    cdr = await backend.cdrs.cdr_for_call(call.call_id)
    assert cdr is not None and cdr.termination_cause == "normal_clearing"
    assert await backend.event_types(call.call_id) == CALL_EVENTS


async def test_writes_queued_together_share_one_transaction(backend: Backend) -> None:
    stats = Counters()
    persistence = CallPersistence(backend.calls, backend.cdrs, stats)
    call = OneCall()
    queue = WriteQueue(lambda batch: persistence.write(call.call_id, batch), coalesce_seconds=0.01)
    queue.extend(call.setup()[:3])  # INVITE
    await asyncio.sleep(0)  # the queue's task has started: it waits for more before it writes
    queue.extend(call.setup()[3:])  # 180 and 200
    await queue.wait()
    queue.extend(call.teardown())  # BYE
    await queue.wait()
    await check_stored(backend, call)
    assert stats == Counters(persist_batches=2)  # setup, then teardown (the CDR goes on its own)
    if backend.kind == "postgres":  # one outbox row per transaction, its events in order
        key = str(call.call_id)
        assert await backend.transactions() == [{key: CALL_EVENTS[:9]}, {key: CALL_EVENTS[9:]}]


async def test_a_refused_write_is_counted_and_the_valid_ones_of_its_batch_still_land(
    backend: Backend,
) -> None:
    stats = Counters()
    persistence = CallPersistence(backend.calls, backend.cdrs, stats)
    call = OneCall()
    stray = uuid.uuid4()  # no such leg: the repository refuses the write (NotFoundError)
    setup = call.setup()
    actions = [*setup[:4], RecordLegState(stray, "early", None, call.at(0.1)), *setup[4:]]
    teardown = call.teardown()
    # and one that breaks the leg life cycle: a terminated leg cannot become early again
    actions += [*teardown[:1], RecordLegState(call.caller_leg, "early", None, call.at(5)), *teardown[1:]]

    await persistence.write(call.call_id, actions)

    await check_stored(backend, call)
    assert stats.persist_failures == 2 and stats.persist_retries == 0
    assert stats.persist_batches >= 1  # tried together first


async def test_calls_writing_at_once_share_a_transaction_but_not_their_errors(backend: Backend) -> None:
    stats = Counters()
    persistence = CallPersistence(backend.calls, backend.cdrs, stats)
    first, second = OneCall(), OneCall()

    async def both(first_actions: list[PersistAction], second_actions: list[PersistAction]) -> None:
        await asyncio.gather(
            persistence.write(first.call_id, first_actions), persistence.write(second.call_id, second_actions)
        )

    await both(first.setup(), second.setup())
    assert stats == Counters(persist_batches=1)
    await both(first.teardown(), second.teardown())
    assert stats == Counters(persist_batches=3)  # one for both calls' rows, one for both CDRs
    await check_stored(backend, first)
    await check_stored(backend, second)
    if backend.kind == "postgres":  # one outbox row per transaction, holding both calls' events
        both_calls = (str(first.call_id), str(second.call_id))
        assert await backend.transactions() == [
            dict.fromkeys(both_calls, CALL_EVENTS[:9]),
            dict.fromkeys(both_calls, CALL_EVENTS[9:]),
        ]

    # the second call's writes hold one the repository refuses: the first call's must not suffer
    first, second = OneCall(), OneCall()
    teardown = second.teardown()
    refused = RecordLegState(second.caller_leg, "early", None, second.at(5))
    await both(first.setup(), second.setup())
    await both(first.teardown(), [teardown[0], refused, *teardown[1:]])
    await check_stored(backend, first)
    await check_stored(backend, second)
    assert stats.persist_failures == 1


class GatedCalls:
    """A call repository whose transactions wait at a gate: what is in flight, and how wide, is seen."""

    def __init__(self, inner: CallRepository) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.open = self.widest = 0
        self.groups: list[set[uuid.UUID]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @contextlib.asynccontextmanager
    async def batch(self, call_id: uuid.UUID | None = None, what: str = "") -> AsyncIterator[Any]:
        self.open += 1
        self.widest = max(self.widest, self.open)
        try:
            await self.gate.wait()
            async with self.inner.batch(call_id) as writer:
                self.groups.append(set())
                yield _Recording(writer, self.groups[-1])
        finally:
            self.open -= 1


class _Recording:
    """A transaction's writer that notes which calls it starts."""

    def __init__(self, writer: Any, calls: set[uuid.UUID]) -> None:
        self._writer, self._calls = writer, calls

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._writer, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], NewCall):  # the calls a transaction starts
                self._calls.add(args[0].call_id)  # type: ignore[arg-type]
            return method(*args, **kwargs)

        return call


async def test_a_transaction_starts_beside_one_in_flight_only_when_enough_calls_wait() -> None:
    """Light load goes in few transactions: while one is in flight, the calls that hand in writes wait
    for it to end and go together; only ``spread_calls`` of them waiting open a second one beside it."""
    gated = GatedCalls(MemoryCallRepository(node_id=NODE))
    persistence = CallPersistence(gated, MemoryCdrRepository(node_id=NODE), Counters())  # type: ignore[arg-type]

    async def one_then(waiting: int) -> tuple[OneCall, list[OneCall], list[asyncio.Future[None]]]:
        """A call's setup goes in flight (held at the gate), then ``waiting`` other calls hand in theirs."""
        gated.gate.clear()
        gated.groups.clear()
        first, others = OneCall(), [OneCall() for _ in range(waiting)]
        writes = [asyncio.ensure_future(persistence.write(first.call_id, first.setup()))]
        await asyncio.sleep(0)
        writes += [asyncio.ensure_future(persistence.write(c.call_id, c.setup())) for c in others]
        for _ in range(5):
            await asyncio.sleep(0)
        return first, others, writes

    first, few, writes = await one_then(3)
    assert gated.open == 1  # the three wait: fewer than spread_calls
    gated.gate.set()
    await asyncio.gather(*writes)
    assert gated.widest == 1
    assert gated.groups == [{first.call_id}, {c.call_id for c in few}]  # the three in one transaction

    busy, many, writes = await one_then(persistence._group.spread_calls)
    assert gated.open == 2  # spread_calls waiting: a second transaction beside the first
    gated.gate.set()
    await asyncio.gather(*writes)
    assert gated.groups == [{busy.call_id}, {c.call_id for c in many}]

    # a transaction that hangs holds the few waiting writes back only spread_after_seconds
    persistence._group.spread_after_seconds = 0.05
    stuck, late, writes = await one_then(2)
    assert gated.open == 1
    for _ in range(200):  # the timer's 0.05 s, however slow the machine (up to 10 s)
        if gated.open == 2:
            break
        await asyncio.sleep(0.05)
    assert gated.open == 2  # the two went beside the hung one
    gated.gate.set()
    await asyncio.gather(*writes)
    assert gated.groups == [{stuck.call_id}, {c.call_id for c in late}]


async def test_the_cdr_of_a_batch_is_written_after_every_row_queued_with_it() -> None:
    """A forked leg's CANCEL result that arrives just after the caller hung up is queued behind the CDR;
    whoever waits for the CDR (a billing consumer, the e2e tests) must find that row already there."""
    calls = MemoryCallRepository(node_id=NODE)
    attempts_when_rated: list[list[str]] = []

    class WatchingCdrs(MemoryCdrRepository):
        async def record_cdr(self, cdr: NewCdr) -> CdrRecord:
            attempts = await calls.list_routing_attempts(cdr.call_id)
            attempts_when_rated.append([attempt.result for attempt in attempts])
            return await super().record_cdr(cdr)

    persistence = CallPersistence(calls, WatchingCdrs(node_id=NODE), Counters())
    call = OneCall()
    late = RecordRouting(call.call_id, 1, "sip:bob@10.0.0.6", "cancelled", 487, None, call.at(5))
    await persistence.write(call.call_id, [*call.setup(), *call.teardown(), late])
    assert attempts_when_rated == [["answered", "cancelled"]]


class FlakyCalls(MemoryCallRepository):
    """The fake with a database that can be down: every write raises DatabaseUnavailable meanwhile."""

    down = True

    def __getattribute__(self, name: str) -> Any:
        if name in _WRITES and object.__getattribute__(self, "down"):
            raise DatabaseUnavailable("cannot reach PostgreSQL at 127.0.0.1:1 (connection refused)")
        return object.__getattribute__(self, name)


_WRITES = frozenset(
    {
        "start_call",
        "add_leg",
        "change_leg_state",
        "record_routing_attempt",
        "answer_call",
        "end_call",
        "batch",
    }
)


async def test_writes_wait_out_a_database_outage_and_none_is_lost() -> None:
    """The fake's database is down for three attempts: the writes are retried with backoff (the sleeps
    are recorded, not waited) and land in order once it is back."""
    calls = FlakyCalls(node_id=NODE)
    backend = Backend("memory", calls, MemoryCdrRepository(node_id=NODE), calls.outbox)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            calls.down = False

    stats = Counters()
    persistence = CallPersistence(calls, backend.cdrs, stats, retry_first=0.05, retry_max=0.15, sleep=sleep)
    call = OneCall()
    await persistence.write(call.call_id, [*call.setup(), *call.teardown()])

    assert sleeps == [0.05, 0.1, 0.15]
    assert stats.persist_retries == 3 and stats.persist_failures == 0
    await check_stored(backend, call)


# ---- PostgreSQL really unreachable: a pool pointing at a port where nothing listens, until a proxy
# to the real server opens there --------------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` once opened; before that the port refuses connections."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, upstream_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


def via_port(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    credentials = parts.netloc.rsplit("@", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{port}"))


async def test_postgres_unreachable_delays_the_writes_and_they_land_when_it_answers(
    pg_database: Callable[[str], Awaitable[str]],  # noqa: F811
) -> None:
    calls_dsn = await pg_database("calls")
    parts = urlsplit(calls_dsn)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    # min_size=0: the pool comes up without a server, as the node's does
    unreachable_pool = await create_pool(via_port(calls_dsn, proxy.port), min_size=0, max_size=2)
    direct = await open_pool(calls_dsn)
    cdrs = MemoryCdrRepository(node_id=NODE)
    try:
        backend = Backend("postgres", PgCallRepository(unreachable_pool, node_id=NODE), cdrs, direct)
        stats = Counters()
        retried = asyncio.Event()

        async def sleep(seconds: float) -> None:
            if stats.persist_retries >= 3:
                retried.set()
            await asyncio.sleep(seconds)

        persistence = CallPersistence(
            backend.calls, cdrs, stats, retry_first=0.01, retry_max=0.05, sleep=sleep
        )
        call = OneCall()
        writing = asyncio.ensure_future(persistence.write(call.call_id, [*call.setup(), *call.teardown()]))
        await asyncio.wait_for(retried.wait(), 30)
        assert not writing.done()
        assert await direct.fetchval("SELECT count(*) FROM call_sessions") == 0

        await proxy.open()  # PostgreSQL answers again
        async with asyncio.timeout(30):
            await writing
        await check_stored(backend, call)
        assert stats.persist_failures == 0
    finally:
        await unreachable_pool.close()
        await direct.close()
        await proxy.close()
