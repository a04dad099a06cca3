"""REGISTER through SipNode.install_registrar with real Redis: 401 then 200 with the binding stored,
the authenticated REGISTER run without an asyncio Task, and a 500 (never silence) when Redis is away.
Driven by the register-cost bench's in-process builder (datagrams into the UDP protocol object)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import pytest

from bench.suites import register_cost as rc
from edge.sip_node import InlineRun

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/14"


async def require_redis() -> None:
    """Skip without Redis, or fail when services are required (CI), as the other service tests do."""
    if await rc.redis_reachable(REDIS_URL):
        return
    message = f"Redis is not reachable at {REDIS_URL}; start it: bash scripts/services up"
    if os.environ.get("UC_EDGE_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


async def first_answer(bench: Any, seconds: float = 1.0) -> bytes | None:
    """The first datagram the node sent, once the Redis round trip it waits on has come back."""
    for _ in range(int(seconds * 1000)):
        if bench.udp.sent:
            return bytes(bench.udp.sent[0][0])
        await asyncio.sleep(0.001)
    return None


async def test_register_rounds_store_bindings_in_redis_without_tasks() -> None:
    await require_redis()
    bench = await rc.build(REDIS_URL, "test-reginline:", 20.0)
    try:
        assert bench.node._inline_registers  # the pipelined store allows it
        user = bench.users[0]
        bench.receive(rc.register(user, 1, 1, "t"), rc.CLIENT)
        challenge = bench.udp.sent.pop()[0]
        assert challenge.startswith(b"SIP/2.0 401 ")
        tasks_before = asyncio.all_tasks()
        bench.receive(rc.register(user, 1, 2, "t", rc.authorization(user, challenge)), rc.CLIENT)
        # suspended (credential lookup, then Redis): an InlineRun; only the first lookup of a user is a Task
        assert len(bench.node._register_runs) == 1
        answer = await first_answer(bench)
        assert answer is not None and answer.startswith(b"SIP/2.0 200 ")
        assert b"expires=3600" in answer
        bench.udp.sent.clear()
        assert not bench.node._register_runs
        found = await bench.node.registrar.store.lookup(f"sip:{user}@{rc.DOMAIN}", bench.clock.wall)
        assert [binding.contact_uri for binding in found] == [f"sip:{user}@127.0.0.1:5099;transport=UDP"]
        # credentials now cached: the next authenticated REGISTER creates no task at all
        bench.receive(rc.register(user, 2, 1, "t"), rc.CLIENT)
        challenge = bench.udp.sent.pop()[0]
        bench.receive(rc.register(user, 2, 2, "t", rc.authorization(user, challenge)), rc.CLIENT)
        assert asyncio.all_tasks() - tasks_before == set()
        answer = await first_answer(bench)
        assert answer is not None and answer.startswith(b"SIP/2.0 200 ")
        bench.udp.sent.clear()
        await rc.rounds(bench, 10, 30, 10)  # more rounds, every answer checked
        assert bench.node.registrar_stats["registrations"] >= 32
    finally:
        await bench.cleanup()


async def test_redis_away_gets_500_with_retry_after() -> None:
    bench = await rc.build("redis://127.0.0.1:1/0", "test-reginline-down:", 20.0)  # nothing listens
    try:
        user = bench.users[0]
        bench.receive(rc.register(user, 1, 1, "d"), rc.CLIENT)
        challenge = bench.udp.sent.pop()[0]
        bench.receive(rc.register(user, 1, 2, "d", rc.authorization(user, challenge)), rc.CLIENT)
        answer = await first_answer(bench, seconds=5.0)
        assert answer is not None and answer.startswith(b"SIP/2.0 500 ")
        assert b"Retry-After: 5" in answer
        assert bench.node.registrar is not None and bench.node.registrar.pending == 0
    finally:
        with contextlib.suppress(Exception):  # deleting the run's keys fails too: nothing listens
            await bench.cleanup()


async def test_stop_closes_register_runs_in_flight() -> None:
    bench = await rc.build(None, "test-reginline-stop:", 20.0)
    try:
        loop = asyncio.get_running_loop()
        never: asyncio.Future[object] = loop.create_future()

        class Stuck:
            async def run(self, *args: object) -> object:
                return await never

            async def aclose(self) -> None:
                pass

        bench.node._location._pipe = Stuck()
        user = bench.users[0]
        bench.receive(rc.register(user, 1, 1, "s"), rc.CLIENT)
        challenge = bench.udp.sent.pop()[0]
        bench.receive(rc.register(user, 1, 2, "s", rc.authorization(user, challenge)), rc.CLIENT)
        for _ in range(100):
            await asyncio.sleep(0)
        runs = list(bench.node._register_runs)
        assert len(runs) == 1 and isinstance(runs[0], InlineRun)
        assert bench.node.registrar is not None and bench.node.registrar.pending == 1
        await bench.node.stop()
        assert not bench.node._register_runs and bench.node.registrar.pending == 0
    finally:
        await bench.cleanup()
