"""The asyncio shell around :class:`~signaling.callcontrol.call.Call`: SIP in and out through the hub,
media through the ``MediaControl`` port, rows through the repositories, one timer per call.

    service = CallControlService(hub=hub, media=media, calls=calls_repo, cdrs=cdr_repo, router=router,
                                 env=env, authenticator=auth, credentials=lookup)
    service.install(sip_router)        # INVITE, ACK, BYE, CANCEL, INFO, REFER, NOTIFY, UPDATE, PRACK
    await service.start()              # reads media events
    ...
    await service.stop()

SIP sends run at once (in order). Media actions of a call run one after another on the call's media
queue; repository writes go on its write queue (:mod:`signaling.callcontrol.persistence`): in order,
the writes queued close together in one transaction, retried through a database outage, a refused one
logged with the call id and counted (``persist_failures``) while the call goes on.

Failed digest authentication of an INVITE counts against the user and the source in the
:class:`~signaling.flood.FloodGuard` (as REGISTER's does): past the limit they get 403 without a check.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import dataclasses
import datetime as dt
import functools
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from edge.logs import bind_call, call_context, get_logger
from media.control import LocalMedia, MediaControl, MediaEvent, QualitySnapshot
from signaling.callcontrol.actions import (
    CreateEndpoint,
    DestroyEndpoint,
    MediaAction,
    PersistAction,
    RecordQuality,
    ReportTrunkFailover,
    ResolveRoute,
    RouteReject,
    SendSip,
)
from signaling.callcontrol.call import Call, CallEnvironment, CallerIdentity
from signaling.callcontrol.executor import run_media
from signaling.callcontrol.persistence import CallPersistence, WriteQueue
from signaling.callcontrol.router import CallRouter, CredentialLookup
from signaling.flood import FloodGuard
from signaling.sip.dialog import uri_of
from signaling.sip.digest import AuthOutcome, Credentials, DigestAuthenticator
from signaling.sip.errors import LocalProtocolError
from signaling.sip.events import (
    Event,
    RequestReceived,
    ResponseReceived,
    TransactionKey,
    TransactionTimeout,
    TransportError,
)
from signaling.sip.invite import SendAck, SendRequest, SendResponse
from signaling.sip.message import Request, build_response, cseq_of, to_tag
from signaling.sip.transaction import TransactionState
from signaling.transport.application import SipRouter
from signaling.transport.hub import SipTransportHub
from storage.ports import CallRepository, CdrRepository, QualityReport

log = get_logger("uc_edge.callcontrol")

# Writes of a call queued within this time of each other share one transaction: the INVITE, 180 and 200
# of a call answered at once become one, not three or four; rows trail the signalling by this much more.
WRITE_COALESCE_SECONDS = 0.05

# The finished calls kept while their writes drain are pruned when they reach this many (or twice the
# number left after the previous prune).
DRAINING_PRUNE_MIN = 256

CALL_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "INFO", "REFER", "NOTIFY", "UPDATE", "PRACK", "MESSAGE")


@dataclasses.dataclass(slots=True)
class CallControlStats:
    calls_started: int = 0
    calls_answered: int = 0
    calls_ended: int = 0
    auth_challenges: int = 0
    auth_failures: int = 0
    persist_failures: int = 0
    persist_retries: int = 0
    persist_batches: int = 0
    auth_blocked: int = 0
    media_failures: int = 0
    route_failures: int = 0
    unknown_dialog_requests: int = 0
    application_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class _Resumed:
    """Awaitable that finishes a coroutine someone already stepped by hand and that suspended on
    ``pending`` (the future it yielded): a task awaiting this goes on exactly where the coroutine stopped,
    results, exceptions and cancellation passed through as ``await`` would."""

    __slots__ = ("_coroutine", "_pending")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coroutine, self._pending = coroutine, pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, pending = self._coroutine, self._pending
        while True:
            try:
                value = yield pending
            except BaseException as error:  # thrown in by the task: cancellation, mostly
                try:
                    pending = coroutine.throw(error)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                pending = coroutine.send(value)
            except StopIteration as stop:
                return stop.value

    def close(self) -> None:
        """Cancel the coroutine if it never finished (its task was cancelled before its first step), as
        the task would have: ``CancelledError`` at the await it stopped on."""
        if inspect.getcoroutinestate(self._coroutine) == inspect.CORO_CLOSED:
            return
        try:
            self._coroutine.throw(asyncio.CancelledError())
        except BaseException:  # cancelled (or failed) as asked: nobody awaits the outcome
            pass
        self._coroutine.close()  # it caught the cancellation and waited again: nothing will resume it


class SerialQueue:
    """Runs coroutines one after another, after the current callback, without a task when they do not
    suspend.

    Media actions almost never wait (the plane answers from memory and a socket pool), and an asyncio
    task per call's batch of them cost more than the actions: jobs run from one ``call_soon`` callback,
    each coroutine stepped by hand; the first that suspends is finished by a task, which then runs the
    rest. Order is kept either way, and a job still runs after the code that queued it has returned.
    """

    def __init__(
        self, on_error: Callable[[BaseException], None], loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self._pending: collections.deque[Callable[[], Coroutine[Any, Any, None]]] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._scheduled = False
        self._on_error = on_error
        # Kept, not asked for per job: on Python 3.11 asyncio.get_running_loop() makes a getpid() system
        # call (its fork check) every time, and the media queue of every call is used several times.
        self._loop = loop or asyncio.get_running_loop()

    def put(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._pending.append(job)
        if self._task is None and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run_ready)

    @property
    def idle(self) -> bool:
        return self._task is None and not self._scheduled

    def _run_ready(self) -> None:
        self._scheduled = False
        while self._pending and self._task is None:
            coroutine = self._pending.popleft()()
            # Each job steps in a context of its own, as a task's would, and a job that waits is finished
            # in that same context: a context variable set before the wait (the log binding) is reset
            # after it, which fails in any other context.
            context = contextvars.copy_context()
            try:
                pending = context.run(coroutine.send, None)
            except StopIteration:
                continue
            except Exception as error:
                self._on_error(error)
                continue
            resumed = _Resumed(coroutine, pending)
            self._task = task = self._loop.create_task(self._drain(resumed), context=context)
            task.add_done_callback(functools.partial(self._task_done, resumed))

    def _task_done(self, resumed: _Resumed, task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never ran _drain (nor its finally): clean up here.
        if self._task is task:
            self._task = None
        resumed.close()

    async def _drain(self, suspended: _Resumed) -> None:
        """Finish the job that suspended, then the rest of the queue, one after another."""
        current: Awaitable[None] = suspended
        try:
            while True:
                try:
                    await current
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    self._on_error(error)
                if not self._pending:
                    return
                current = self._pending.popleft()()
        finally:
            self._task = None

    async def wait(self) -> None:
        while not self.idle:
            if self._task is None:
                await asyncio.sleep(0)  # the queued callback runs first
            else:
                await asyncio.shield(self._task)

    def cancel(self) -> None:
        self._pending.clear()
        if self._task is not None:
            self._task.cancel()


@dataclasses.dataclass(eq=False)
class _Running:
    call: Call
    call_id_text: str  # str(call.call_id), printed once: the media plane is asked with it per action
    media: SerialQueue
    persist: WriteQueue
    log: dict[str, Any]
    timer: asyncio.TimerHandle | None = None
    deadline: float | None = None
    call_ids: set[str] = dataclasses.field(default_factory=set)
    endpoints: set[str] = dataclasses.field(default_factory=set)
    # The call's client transactions still waiting for a final response (keys of ``_transactions``): the
    # call forgets its own when it ends instead of scanning every call's.
    transactions: set[TransactionKey] = dataclasses.field(default_factory=set)

    @property
    def settled(self) -> bool:
        """No media action or repository write of the call is queued or running."""
        return self.persist.idle and self.media.idle


class _Draining:
    """What a finished call leaves while its queued writes and media actions still run: the two queues and
    its log context, not the call. The call's objects (legs, sessions, dialogs, messages, SDP: ~250
    collector-tracked objects) are freed when the call is forgotten, while they are still in the cache,
    rather than kept for the ~1 s the writes trail the signalling: kept, they were freed in bursts of a
    few hundred calls at ~50 us each and traversed by the garbage collector's older generations meanwhile."""

    __slots__ = ("log", "media", "persist")

    def __init__(self, running: _Running) -> None:
        self.media = running.media
        self.persist = running.persist
        self.log = running.log

    @property
    def settled(self) -> bool:
        return self.persist.idle and self.media.idle


class _LoopWallClock:
    """Loop time → aware UTC datetime. A call asks for the same instant many times while it handles one
    message (each row and event of a state change is stamped), so the last answer is kept."""

    __slots__ = ("_last", "_last_now", "_offset")

    def __init__(self, offset: float) -> None:
        self._offset = offset
        self._last_now = -1.0
        self._last = dt.datetime.fromtimestamp(offset, dt.UTC)

    def __call__(self, now: float) -> dt.datetime:
        if now != self._last_now:
            self._last = dt.datetime.fromtimestamp(self._offset + now, dt.UTC)
            self._last_now = now
        return self._last


class CallControlService:
    def __init__(
        self,
        *,
        hub: SipTransportHub,
        media: MediaControl,
        calls: CallRepository,
        cdrs: CdrRepository,
        router: CallRouter,
        env: CallEnvironment,
        authenticator: DigestAuthenticator | None = None,
        credentials: CredentialLookup | None = None,
        route_timeout: float = 5.0,
        wallclock: Callable[[], float] = time.time,
        flood: FloodGuard | None = None,
        write_coalesce_seconds: float = WRITE_COALESCE_SECONDS,
    ) -> None:
        self.hub = hub
        self.media = media
        self.calls_repo = calls
        self.cdrs = cdrs
        self.router = router
        self.config = env.config
        self.authenticator = authenticator
        self.credentials = credentials
        self.route_timeout = route_timeout
        self.wallclock = wallclock
        self.flood = flood
        self.stats = CallControlStats()
        self.write_coalesce_seconds = write_coalesce_seconds
        self._persistence = CallPersistence(calls, cdrs, self.stats)
        self._env = env
        self._running: dict[uuid.UUID, _Running] = {}
        self._draining: set[_Draining] = set()  # finished calls whose queued writes still run
        self._prune_draining_at = DRAINING_PRUNE_MIN
        self._by_call_id: dict[str, _Running] = {}
        self._by_endpoint: dict[str, _Running] = {}
        self._transactions: dict[TransactionKey, tuple[_Running, uuid.UUID, str, int]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._events_task: asyncio.Task[None] | None = None
        if self.config.require_auth and (authenticator is None or credentials is None):
            raise ValueError("require_auth needs an authenticator and a credential lookup")

    @staticmethod
    def environment(
        env: CallEnvironment, loop_time: Callable[[], float], wallclock: Callable[[], float] = time.time
    ) -> CallEnvironment:
        """``env`` with ``to_datetime`` mapping the loop's monotonic clock onto wall-clock UTC."""
        return dataclasses.replace(env, to_datetime=_LoopWallClock(wallclock() - loop_time()))

    # ------------------------------------------------------------------ lifecycle

    def install(self, router: SipRouter) -> None:
        for method in CALL_METHODS:
            router.route(method, self.on_request)
        previous = router.other_events

        def other(event: Event, hub: SipTransportHub) -> Awaitable[None] | None:
            self.on_other(event)
            return previous(event, hub) if previous is not None else None

        router.other_events = other

    async def start(self) -> None:
        self._events_task = asyncio.ensure_future(self._read_media_events())

    async def stop(self, drain_seconds: float = 2.0) -> None:
        if self._events_task is not None:
            self._events_task.cancel()
        for running in list(self._running.values()):
            if running.timer is not None:
                running.timer.cancel()
        everyone: list[_Running | _Draining] = [*self._running.values(), *self._draining]
        waits = [r.persist.wait() for r in everyone] + [r.media.wait() for r in everyone]
        if waits:
            await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=drain_seconds)
        for call in everyone:
            call.media.cancel()
            dropped = call.persist.cancel()
            if dropped:
                with bind_call.of(call.log):
                    log.error("call writes not done at shutdown", writes=dropped)
        for task in list(self._tasks):
            task.cancel()

    @property
    def active_calls(self) -> int:
        return len(self._running)

    def stats_snapshot(self) -> dict[str, int]:
        return {**self.stats.as_dict(), "active_calls": len(self._running)}

    async def idle(self) -> None:
        """Wait until every queued media action and repository write has run (tests, shutdown)."""
        while True:
            self._prune_draining()
            everyone: list[_Running | _Draining] = [*self._running.values(), *self._draining]
            busy = [r for r in everyone if not r.settled]
            if not busy and not self._tasks:
                return
            for running in busy:
                await running.persist.wait()
                await running.media.wait()
            if self._tasks:
                await asyncio.wait(list(self._tasks))

    # ------------------------------------------------------------------ SIP input

    def on_request(self, event: RequestReceived, hub: SipTransportHub) -> Awaitable[None] | None:
        request = event.request
        method = request.method
        call_id = request.headers.get("Call-ID") or ""
        running = self._by_call_id.get(call_id)
        if method == "INVITE" and to_tag(request) is None and running is None:
            return self._new_call(event)
        if method == "CANCEL":
            if running is not None and not running.call.ended:
                self._feed(running, lambda now: running.call.handle_cancel(request, event.transaction, now))
            elif event.cancels is not None:
                invite_tx = hub.endpoint.server_transaction(event.cancels)
                # Still unanswered: a transaction with its final response has let its request go.
                if invite_tx is not None and invite_tx.state is TransactionState.PROCEEDING:
                    self._respond(event.cancels, build_response(invite_tx.request, 487))
            return None
        if running is not None:
            handled: list[bool] = []
            self._feed(
                running,
                lambda now: handled.append(running.call.handle_request(request, event.transaction, now)),
            )
            if handled and handled[0]:
                return None
        if event.transaction is not None:  # not an ACK: a dialog we do not know
            self.stats.unknown_dialog_requests += 1
            self._respond(event.transaction, build_response(request, 481))
        return None

    def on_other(self, event: Event) -> None:
        if isinstance(event, ResponseReceived):
            known = self._transactions.get(event.transaction)
            if event.response.code >= 200 and known is not None:
                del self._transactions[event.transaction]
                known[0].transactions.discard(event.transaction)
            running = self._by_call_id.get(event.response.headers.get("Call-ID") or "")
            if running is None and known is not None:
                running = known[0]
            if running is not None:
                call, response = running.call, event.response
                self._feed(running, lambda now: call.handle_response(response, now))
        elif isinstance(event, TransactionTimeout | TransportError):
            key = event.transaction
            known = self._transactions.pop(key, None) if key is not None else None
            if known is None:
                return
            running, leg_id, method, cseq = known
            running.transactions.discard(key)
            status = 408 if isinstance(event, TransactionTimeout) else 503
            self._feed(running, lambda now: running.call.request_failed(leg_id, method, cseq, now, status))

    def _new_call(self, event: RequestReceived) -> Awaitable[None] | None:
        trunk = self.config.trunk_for_source(event.source.host)
        if trunk is not None:
            self._start_call(event, CallerIdentity(trunk=trunk.name))
            return None
        if not self.config.require_auth:
            self._start_call(event, CallerIdentity())
            return None
        return self._authenticate_then_start(event)

    async def _authenticate_then_start(self, event: RequestReceived) -> None:
        identity = await self._authenticate(event)
        if identity is not None:
            self._start_call(event, identity)

    async def _authenticate(self, event: RequestReceived) -> CallerIdentity | None:
        """Digest auth of an INVITE from a user (407 + Proxy-Authenticate when missing or wrong)."""
        assert self.authenticator is not None and self.credentials is not None
        authenticator, request = self.authenticator, event.request
        transaction = event.transaction
        assert transaction is not None
        now = self.wallclock()
        credentials: Credentials | None = None
        for value in request.headers.getlist("Proxy-Authorization"):
            try:
                parsed = Credentials.parse(value)
            except ValueError:
                self._respond(transaction, build_response(request, 400, reason="Bad Proxy-Authorization"))
                return None
            if parsed.realm == authenticator.realm:
                credentials = parsed
                break
        if credentials is None:
            self.stats.auth_challenges += 1
            self._respond(
                transaction,
                build_response(request, 407, headers=authenticator.challenge_headers(now, proxy=True)),
            )
            return None
        flood = self.flood
        if flood is not None and flood.auth_blocked(credentials.username, event.source.host, now):
            self.stats.auth_blocked += 1
            self._respond(
                transaction, build_response(request, 403, reason="Too many failed authentication attempts")
            )
            return None
        try:
            stored = await self.credentials(credentials.username, authenticator.realm)
        except Exception:
            log.exception("credential lookup failed", user=credentials.username)
            self._respond(transaction, build_response(request, 500, headers=[("Retry-After", "5")]))
            return None
        ha1_value = stored.ha1(credentials.algorithm.value) if stored is not None else None
        request_uri = str(request.uri)
        if credentials.uri != request_uri and _names_same_target(credentials.uri, request):
            request_uri = credentials.uri
        result = authenticator.verify(
            credentials, method="INVITE", request_uri=request_uri, ha1_value=ha1_value, now=now
        )
        if result.outcome is AuthOutcome.OK and stored is not None:
            if flood is not None:
                flood.record_auth_success(credentials.username, now)
            return CallerIdentity(username=credentials.username, account_id=stored.account_id)
        self.stats.auth_failures += 1
        if result.outcome is AuthOutcome.BAD_REQUEST:
            self._respond(transaction, build_response(request, 400, reason=result.reason[:100]))
            return None
        if result.outcome is AuthOutcome.INVALID and flood is not None:
            flood.record_auth_failure(credentials.username, event.source.host, now)
        headers = authenticator.challenge_headers(now, stale=result.outcome.rechallenge_stale, proxy=True)
        self._respond(transaction, build_response(request, 407, headers=headers))
        return None

    def _start_call(self, event: RequestReceived, caller: CallerIdentity) -> None:
        try:
            call = Call(
                event.request,
                transaction=event.transaction,
                source=event.source,
                now=self.hub.now(),
                caller=caller,
                env=self._env,
            )
        except Exception:
            self.stats.application_errors += 1
            log.exception("could not start a call", sip_call_id=event.request.headers.get("Call-ID"))
            if event.transaction is not None:
                self._respond(event.transaction, build_response(event.request, 500))
            return
        self.stats.calls_started += 1
        call_id_text = str(call.call_id)
        context = call_context(call_id_text, str(call.correlation_id))
        running = _Running(
            call,
            call_id_text,
            SerialQueue(self._media_error(context), self.hub.loop),
            # The queue's writer knows the call by id and log context, not by ``running``, which holds the
            # queue: no reference cycle to wait for the garbage collector after the call.
            WriteQueue(
                functools.partial(self._write, context, call.call_id),
                self.write_coalesce_seconds,
                self.hub.loop,
            ),
            context,
        )
        self._running[call.call_id] = running
        with bind_call.of(running.log):
            self._process(running, answered_before=False)

    # ------------------------------------------------------------------ driving a call

    def _feed(self, running: _Running, step: Callable[[float], object]) -> None:
        call = running.call
        with bind_call.of(running.log):
            answered_before = call.answered_at is not None
            try:
                step(self.hub.now())
            except Exception:
                self.stats.application_errors += 1
                log.exception("call control failed")
            self._process(running, answered_before)

    def _process(self, running: _Running, answered_before: bool) -> None:
        """Run what the call asks for (inside its log context). Routes the configuration alone decides
        (trunk prefix, echo number) are fed straight back, without a task."""
        call = running.call
        while True:
            writes: list[PersistAction] = []
            placed: list[tuple[int, Any]] = []
            for action in call.actions():
                if isinstance(action, SendSip):
                    self._send(running, action)
                elif isinstance(action, PersistAction):
                    writes.append(action)
                elif isinstance(action, MediaAction):
                    running.media.put(functools.partial(self._run_media, running, action))
                elif isinstance(action, ReportTrunkFailover):
                    call.config.trunk_addresses.note_failover(action.failover)  # in the call's log context
                elif isinstance(action, ResolveRoute):
                    route = self.router.resolve_static(action.query)
                    if route is None:
                        self._spawn(self._route(running, action))
                    else:
                        placed.append((action.step, route))
            if writes:
                running.persist.extend(writes)
            if not placed:
                break
            for step, route in placed:
                try:
                    call.handle_route(step, route, self.hub.now())
                except Exception:
                    self.stats.application_errors += 1
                    log.exception("call control failed")
        for sip_call_id in call.sip_call_ids() - running.call_ids:
            running.call_ids.add(sip_call_id)
            self._by_call_id[sip_call_id] = running
        if not answered_before and call.answered_at is not None:
            self.stats.calls_answered += 1
        self._arm_timer(running)
        if call.finished:
            self._forget(running)

    def _send(self, running: _Running, action: SendSip) -> None:
        message = action.message
        try:
            if isinstance(message, SendResponse):
                if isinstance(message.transaction, TransactionKey):
                    self._respond(message.transaction, message.response)
            elif isinstance(message, SendAck):
                assert action.destination is not None
                self.hub.send_stateless(message.request, action.destination)
            elif isinstance(message, SendRequest):
                assert action.destination is not None
                request = message.request
                key = self.hub.send_request(request, action.destination)
                self._transactions[key] = (running, action.leg_id, request.method, cseq_of(request).sequence)
                running.transactions.add(key)
        except (LocalProtocolError, ValueError, OSError):
            log.exception("SIP send failed", leg_id=str(action.leg_id))

    def _respond(self, transaction: TransactionKey, response: Any) -> None:
        try:
            self.hub.respond(transaction, response)
        except LocalProtocolError:
            pass  # the transaction is already gone (answered, or timed out)

    def _arm_timer(self, running: _Running) -> None:
        deadline = None if running.call.finished else running.call.get_timer()
        if deadline == running.deadline:
            return
        if running.timer is not None:
            running.timer.cancel()
            running.timer = None
        running.deadline = deadline
        if deadline is not None:
            running.timer = self.hub.loop.call_at(deadline, self._on_timer, running)

    def _on_timer(self, running: _Running) -> None:
        running.timer = None
        running.deadline = None
        self._feed(running, running.call.handle_timer)

    def _prune_draining(self) -> None:
        """Let go of the finished calls whose writes are done. Most calls end with writes still queued (they
        trail the signalling), so without this the set kept every call the node ever ran; pruning when it
        has doubled since the last prune costs O(1) per call and keeps it at most twice what is draining."""
        self._draining = {r for r in self._draining if not r.settled}
        self._prune_draining_at = max(DRAINING_PRUNE_MIN, 2 * len(self._draining))

    def _forget(self, running: _Running) -> None:
        call = running.call
        if self._running.pop(call.call_id, None) is None:
            return
        if not running.settled:
            self._draining.add(_Draining(running))
            if len(self._draining) >= self._prune_draining_at:
                self._prune_draining()
        self.stats.calls_ended += 1
        if running.timer is not None:
            running.timer.cancel()
            running.timer = None
        for sip_call_id in running.call_ids:
            if self._by_call_id.get(sip_call_id) is running:
                del self._by_call_id[sip_call_id]
        for endpoint_id in running.endpoints:
            if self._by_endpoint.get(endpoint_id) is running:
                del self._by_endpoint[endpoint_id]
        for key in running.transactions:  # each still maps to this call: answered ones left both
            self._transactions.pop(key, None)
        running.transactions.clear()
        call.release()
        log.info("call finished", cause=call.end_cause, status=call.end_status)

    # ------------------------------------------------------------------ async work

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = self.hub.loop.create_task(coroutine)  # not ensure_future: no loop lookup (getpid) per task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _route(self, running: _Running, action: ResolveRoute) -> None:
        call = running.call
        with bind_call.of(running.log):
            try:
                async with asyncio.timeout(self.route_timeout):  # no extra task, unlike wait_for
                    route = await self.router.resolve(action.query)
            except Exception:
                self.stats.route_failures += 1
                log.exception("routing failed", user=action.query.user)
                route = RouteReject(
                    f"sip:{action.query.user}@{action.query.host}", 500, "failed", "routing failed"
                )
        self._feed(running, lambda now: call.handle_route(action.step, route, now))

    async def _run_media(self, running: _Running, action: MediaAction) -> None:
        call = running.call
        with bind_call.of(running.log):
            if isinstance(action, CreateEndpoint):
                try:
                    local = await run_media(action, self.media, running.call_id_text)
                except Exception as error:
                    reason = str(error)
                    self.stats.media_failures += 1
                    log.warning("media endpoint not created", error=reason)
                    self._feed(
                        running, lambda now: call.handle_endpoint(action.leg_id, None, now, error=reason)
                    )
                    return
                assert isinstance(local, LocalMedia)
                running.endpoints.add(local.endpoint_id)
                self._by_endpoint[local.endpoint_id] = running
                self._feed(running, lambda now: call.handle_endpoint(action.leg_id, local, now))
                return
            result = await run_media(action, self.media, running.call_id_text)
            if isinstance(action, DestroyEndpoint) and isinstance(result, QualitySnapshot):
                self._by_endpoint.pop(action.endpoint_id, None)
                self._report_quality(running, action, result)

    def _report_quality(self, running: _Running, action: DestroyEndpoint, snapshot: QualitySnapshot) -> None:
        if snapshot.packets_received <= 0:
            return
        call = running.call
        seconds = max(self.hub.now() - call.started_at, 0.001)
        try:
            report = QualityReport(
                leg_id=action.leg_id,
                interval_seconds=seconds,
                jitter_ms=max(snapshot.jitter_ms, 0.0),
                packet_loss_fraction=min(max(snapshot.loss_percent / 100.0, 0.0), 1.0),
                packets_lost=max(snapshot.packets_lost, 0),
                rtt_ms=snapshot.rtt_ms,
                mos=snapshot.mos if snapshot.mos is None or 1 <= snapshot.mos <= 5 else None,
            )
        except ValueError:
            return
        running.persist.put(RecordQuality(call.call_id, report))

    async def _write(self, context: dict[str, Any], call_id: uuid.UUID, batch: list[PersistAction]) -> None:
        with bind_call.of(context):
            await self._persistence.write(call_id, batch)

    def _media_error(self, context: dict[str, Any]) -> Callable[[BaseException], None]:
        def report(error: BaseException) -> None:
            self.stats.media_failures += 1
            with bind_call.of(context):
                log.error("media action failed", error=repr(error))

        return report

    async def _read_media_events(self) -> None:
        try:
            async for event in self.media.events():
                endpoint_id = getattr(event, "endpoint_id", None)
                running = self._by_endpoint.get(endpoint_id) if isinstance(endpoint_id, str) else None
                if running is not None:
                    self._feed(running, functools.partial(_media_event_step, running.call, event))
        except asyncio.CancelledError:
            raise
        except Exception:
            logging.getLogger(__name__).exception("media event stream failed")


def _names_same_target(digest_uri: str, request: Request) -> bool:
    """The client's spelling of the Request-URI in its digest ``uri``: the same URI written differently,
    or (SIPp 3.6) the user-less ``sip:host:port`` of the Request-URI. The response still hashes the
    ``uri`` the client sent and the nonce is ours, so accepting the spelling weakens nothing."""
    try:
        parsed = uri_of(digest_uri)
    except ValueError:
        return False
    target = request.uri
    if parsed == target:
        return True
    return (
        not parsed.user
        and parsed.host.lower() == target.host.lower()
        and (parsed.port or 5060) == (target.port or 5060)
    )


def _media_event_step(call: Call, event: MediaEvent, now: float) -> None:
    call.handle_media_event(event, now)
