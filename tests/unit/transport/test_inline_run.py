"""InlineRun: a coroutine driven by its futures' callbacks, without an asyncio Task."""

from __future__ import annotations

import asyncio
from typing import Any

from edge.sip_node import InlineRun


class Outcome:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, BaseException | None]] = []

    def __call__(self, result: Any, error: BaseException | None) -> None:
        self.calls.append((result, error))


async def test_a_coroutine_that_never_suspends_finishes_before_the_constructor_returns() -> None:
    async def at_once() -> str:
        return "done"

    outcome, live = Outcome(), set[InlineRun]()
    InlineRun(at_once(), outcome, live)
    assert outcome.calls == [("done", None)] and not live


async def test_it_resumes_on_the_futures_it_awaits_without_a_task() -> None:
    loop = asyncio.get_running_loop()
    first: asyncio.Future[int] = loop.create_future()
    second: asyncio.Future[int] = loop.create_future()
    tasks_before = asyncio.all_tasks()

    async def work() -> int:
        a = await first
        await asyncio.sleep(0)  # a bare yield
        return a + await second

    outcome, live = Outcome(), set[InlineRun]()
    InlineRun(work(), outcome, live)
    assert asyncio.all_tasks() == tasks_before  # no Task for it
    assert outcome.calls == [] and len(live) == 1
    first.set_result(1)
    for _ in range(3):
        await asyncio.sleep(0)
    assert outcome.calls == []
    second.set_result(41)
    for _ in range(3):
        await asyncio.sleep(0)
    assert outcome.calls == [(42, None)] and not live


async def test_an_exception_reaches_finish_as_the_error() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()

    async def work() -> int:
        return await future

    outcome, live = Outcome(), set[InlineRun]()
    InlineRun(work(), outcome, live)
    future.set_exception(ConnectionError("Redis connection lost"))
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(outcome.calls) == 1
    result, error = outcome.calls[0]
    assert result is None and isinstance(error, ConnectionError) and not live


async def test_close_stops_the_coroutine_and_finish_is_never_called() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    cleaned = []

    async def work() -> int:
        try:
            return await future
        finally:
            cleaned.append(True)

    outcome, live = Outcome(), set[InlineRun]()
    run = InlineRun(work(), outcome, live)
    run.close()
    assert cleaned == [True] and not live
    future.set_result(1)
    for _ in range(3):
        await asyncio.sleep(0)
    assert outcome.calls == []


async def test_awaiting_something_that_is_not_a_future_is_an_error_not_a_hang() -> None:
    class Odd:
        def __await__(self) -> Any:
            yield "not a future"

    async def work() -> None:
        await Odd()

    outcome, live = Outcome(), set[InlineRun]()
    InlineRun(work(), outcome, live)
    assert len(outcome.calls) == 1 and isinstance(outcome.calls[0][1], RuntimeError) and not live
