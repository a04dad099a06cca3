"""The call's media queue: jobs run in order after the caller returns, stepped by hand until one waits."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from signaling.callcontrol.service import SerialQueue


async def test_jobs_run_in_order_after_the_caller_returns_without_a_task() -> None:
    ran: list[str] = []
    queue = SerialQueue(on_error=lambda error: ran.append(f"error {error}"))

    async def job(name: str) -> None:
        ran.append(name)

    queue.put(lambda: job("a"))
    queue.put(lambda: job("b"))
    assert ran == [] and not queue.idle  # deferred, like a task's first step
    tasks_before = len(asyncio.all_tasks())
    await asyncio.sleep(0)
    assert ran == ["a", "b"]
    assert queue.idle
    assert len(asyncio.all_tasks()) == tasks_before


async def test_a_job_that_waits_is_finished_by_a_task_and_later_jobs_wait_for_it() -> None:
    ran: list[str] = []
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    queue = SerialQueue(on_error=lambda error: ran.append(f"error {error}"))

    async def waits() -> None:
        ran.append("start")
        value = await gate
        ran.append(f"got {value}")
        await asyncio.sleep(0)  # a bare yield inside the resumed coroutine
        ran.append("after yield")

    async def later() -> None:
        ran.append("later")

    queue.put(waits)
    queue.put(later)
    await asyncio.sleep(0)
    assert ran == ["start"] and not queue.idle
    gate.set_result("x")
    await asyncio.wait_for(queue.wait(), 1)
    assert ran == ["start", "got x", "after yield", "later"]
    assert queue.idle


async def test_errors_are_reported_and_the_queue_goes_on() -> None:
    errors: list[str] = []
    ran: list[str] = []
    queue = SerialQueue(on_error=lambda error: errors.append(str(error)))

    async def fails_at_once() -> None:
        raise ValueError("at once")

    async def fails_after_waiting() -> None:
        await asyncio.sleep(0.001)
        raise RuntimeError("after waiting")

    async def ok() -> None:
        ran.append("ok")

    for job in (fails_at_once, ok, fails_after_waiting, ok):
        queue.put(job)
    await asyncio.wait_for(queue.wait(), 1)
    assert errors == ["at once", "after waiting"]
    assert ran == ["ok", "ok"]


async def test_cancel_stops_a_waiting_job_and_drops_the_rest() -> None:
    ran: list[str] = []
    cleaned: list[str] = []
    queue = SerialQueue(on_error=lambda error: ran.append(f"error {error}"))

    async def waits_forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaned.append("cancelled inside the job")
            raise

    async def never() -> None:
        ran.append("never")

    queue.put(waits_forever)
    queue.put(never)
    await asyncio.sleep(0)
    assert not queue.idle
    queue.cancel()
    for _ in range(3):
        await asyncio.sleep(0)
    assert cleaned == ["cancelled inside the job"]
    assert ran == [] and queue.idle


@pytest.mark.parametrize("value", [0, 7])
async def test_a_resumed_job_returns_what_it_awaited(value: int) -> None:
    seen: list[int] = []
    queue = SerialQueue(on_error=lambda error: None)
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def job() -> None:
        seen.append(await fut)

    queue.put(job)
    await asyncio.sleep(0)
    fut.set_result(value)
    await asyncio.wait_for(queue.wait(), 1)
    assert seen == [value]


async def test_a_context_variable_set_before_a_wait_is_reset_after_it() -> None:
    # The log binding sets a context variable around each job; a job that waits must be finished in the
    # context where it was set, or resetting it fails ("created in a different Context").
    binding: contextvars.ContextVar[str | None] = contextvars.ContextVar("binding", default=None)
    errors: list[BaseException] = []
    seen: list[str | None] = []
    queue = SerialQueue(on_error=errors.append)

    async def bound_job(name: str) -> None:
        token = binding.set(name)
        try:
            await asyncio.sleep(0.001)
            seen.append(binding.get())
        finally:
            binding.reset(token)

    queue.put(lambda: bound_job("a"))
    queue.put(lambda: bound_job("b"))
    await asyncio.wait_for(queue.wait(), 1)
    assert errors == []
    assert seen == ["a", "b"]
    assert binding.get() is None  # nothing leaked into the caller's context
