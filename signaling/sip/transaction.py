"""RFC 3261 §17 transaction state machines, with RFC 6026 (Accepted state, Timers L and M).

Four sans-IO classes: :class:`ClientInviteTransaction`, :class:`ClientNonInviteTransaction`,
:class:`ServerInviteTransaction`, :class:`ServerNonInviteTransaction`. They never read a clock
(``now`` comes in), never touch sockets, and write through a :class:`TransactionOutput` (the
endpoint): bytes to send and events for the TU. Each has ``get_timer()`` / ``handle_timer(now)``.

State changes are listed in a ``TRANSITIONS`` table per class; a command the table does not allow
(e.g. a second final response) raises :class:`LocalProtocolError` naming the role and state.
Messages from the network that the table does not allow are absorbed (retransmissions).

Beyond the RFC timers, two guards make sure no transaction lives forever when the TU forgets it:
a client INVITE stuck in Proceeding ends at Timer C; a server INVITE the TU never answers gets a
408 at Timer C; a server non-INVITE the TU never answers ends after 64*T1 (the client gave up).
The INVITE server transaction also retransmits a 2xx over UDP until the ACK arrives (the RFC gives
that job to the TU core, §13.3.1.4; doing it here keeps the dialog layer free of timers).
"""

from __future__ import annotations

import enum
from typing import ClassVar, Protocol

from signaling.sip.errors import LocalProtocolError
from signaling.sip.events import (
    Event,
    ResponseReceived,
    Role,
    TransactionKey,
    TransactionTimeout,
)
from signaling.sip.message import (
    Request,
    Response,
    build_ack_for_non_2xx,
    build_response,
    cseq_of,
    serialize,
    to_tag,
)
from signaling.sip.routing import TransportAddress
from signaling.sip.timers import TimerSettings


class TransactionState(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"

    # Members are singletons compared by identity: hash them the same way, in C (Enum's own __hash__ is a
    # Python call, and every transition looks up a (state, trigger) key).
    __hash__ = object.__hash__


S = TransactionState


class TransactionOutput(Protocol):
    """What a transaction needs from its endpoint."""

    def transmit(self, data: bytes, destination: TransportAddress, *, retransmission: bool) -> None: ...

    def emit(self, event: Event) -> None: ...


class Transaction:
    """Common machinery: state, the transition table, named timers (a dict name -> deadline)."""

    # Slots: a completed UDP server transaction lives 32 s (Timer J), tens of thousands at a time under a
    # REGISTER load; without a __dict__ each is smaller and one object fewer for the garbage collector.
    __slots__ = (
        "__weakref__",  # the endpoint's timer entries refer to transactions weakly
        "_deadlines",
        "_intervals",
        "_output",
        "_timers",
        "destination",
        "key",
        "reliable",
        "scheduled_at",
        "state",
    )

    ROLE: ClassVar[Role]
    KIND: ClassVar[str]
    TRANSITIONS: ClassVar[dict[tuple[TransactionState, str], TransactionState]]

    def __init__(
        self,
        key: TransactionKey,
        destination: TransportAddress,
        output: TransactionOutput,
        timers: TimerSettings,
        initial: TransactionState,
    ) -> None:
        self.key = key
        self.destination = destination
        self.reliable = destination.reliable
        self.state = initial
        self._output = output
        self._timers = timers
        self._deadlines: dict[str, float] = {}
        self._intervals: dict[str, float] = {}
        self.scheduled_at: float | None = None
        """The deadline the endpoint last queued for this transaction (its bookkeeping)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key.branch} {self.key.method} {self.state.value}>"

    @property
    def terminated(self) -> bool:
        return self.state is S.TERMINATED

    def get_timer(self) -> float | None:
        """The earliest deadline, or ``None`` when no timer runs."""
        return min(self._deadlines.values()) if self._deadlines else None

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``, earliest first."""
        while self._deadlines and not self.terminated:
            name, when = min(self._deadlines.items(), key=lambda item: item[1])
            if when > now:
                return
            del self._deadlines[name]
            self._on_timer(name, now)

    def terminate(self) -> None:
        self.state = S.TERMINATED
        self._deadlines.clear()

    def transport_error(self) -> None:
        """The message could not be sent: the transaction ends (§17.1.4, §17.2.4)."""
        self.terminate()

    # -- helpers for subclasses

    def _move(self, trigger: str) -> None:
        target = self.TRANSITIONS.get((self.state, trigger))
        if target is None:
            raise LocalProtocolError(
                f"{self.ROLE} {self.KIND} transaction in state {self.state.value} cannot take {trigger}"
            )
        self.state = target
        if target is S.TERMINATED:
            self._deadlines.clear()

    def _start(self, name: str, now: float, duration: float) -> None:
        self._deadlines[name] = now + duration
        self._intervals[name] = duration

    def _stop(self, *names: str) -> None:
        for name in names:
            self._deadlines.pop(name, None)

    def _wait_then_end(self, name: str, now: float, duration: float) -> None:
        """Enter a 'wait for retransmissions' timer; reliable transports (duration 0) end at once."""
        if duration <= 0:
            self._move(f"timer_{name}")
        else:
            self._start(name, now, duration)

    def _send(self, data: bytes, *, retransmission: bool = False) -> None:
        self._output.transmit(data, self.destination, retransmission=retransmission)

    def _timeout(self, timer: str) -> None:
        self._output.emit(TransactionTimeout(self.key, timer))

    def _on_timer(self, name: str, now: float) -> None:
        raise NotImplementedError


class ClientTransactionBase(Transaction):
    """The request a client transaction sends, kept while it may be retransmitted (Timers A and E).

    A final response lets it go: the transaction then only absorbs retransmitted responses for up to 32 s
    (Timers D, K and M), and each call's lingering transactions would otherwise hold their parsed
    requests (dozens of objects each) for the cyclic garbage collector to walk on every collection.
    """

    __slots__ = ("_request", "_request_bytes")

    def __init__(
        self,
        key: TransactionKey,
        request: Request,
        destination: TransportAddress,
        output: TransactionOutput,
        timers: TimerSettings,
        initial: TransactionState,
    ) -> None:
        super().__init__(key, destination, output, timers, initial)
        self._request: Request | None = request
        self._request_bytes: bytes | None = serialize(request)
        self._send(self._request_bytes)

    @property
    def request(self) -> Request:
        """The request sent (a transaction that got its final response has let it go)."""
        if self._request is None:
            raise LocalProtocolError(f"{self!r} no longer holds its request (it has its final response)")
        return self._request

    def _release_request(self) -> None:
        self._request = None
        self._request_bytes = None

    def _retransmit_request(self) -> None:
        if self._request_bytes is not None:
            self._send(self._request_bytes, retransmission=True)


class ClientInviteTransaction(ClientTransactionBase):
    __slots__ = ("_ack_bytes",)
    ROLE = "client"
    KIND = "INVITE"
    TRANSITIONS = {
        (S.CALLING, "1xx"): S.PROCEEDING,
        (S.CALLING, "2xx"): S.ACCEPTED,
        (S.CALLING, "300-699"): S.COMPLETED,
        (S.CALLING, "timer_B"): S.TERMINATED,
        (S.CALLING, "transport_error"): S.TERMINATED,
        (S.PROCEEDING, "1xx"): S.PROCEEDING,
        (S.PROCEEDING, "2xx"): S.ACCEPTED,
        (S.PROCEEDING, "300-699"): S.COMPLETED,
        (S.PROCEEDING, "timer_C"): S.TERMINATED,
        (S.PROCEEDING, "transport_error"): S.TERMINATED,
        (S.COMPLETED, "timer_D"): S.TERMINATED,
        (S.COMPLETED, "transport_error"): S.TERMINATED,
        (S.ACCEPTED, "timer_M"): S.TERMINATED,
    }

    def __init__(
        self,
        key: TransactionKey,
        request: Request,
        destination: TransportAddress,
        output: TransactionOutput,
        timers: TimerSettings,
        now: float,
    ) -> None:
        super().__init__(key, request, destination, output, timers, S.CALLING)
        self._ack_bytes: bytes | None = None
        if not self.reliable:
            self._start("A", now, timers.timer_a)
        self._start("B", now, timers.timer_b)

    def receive_response(self, response: Response, source: TransportAddress, now: float) -> None:
        code = response.code
        if self.state in (S.CALLING, S.PROCEEDING):
            if code < 200:
                self._move("1xx")
                self._stop("A", "B")
                self._start("C", now, self._timers.timer_c)
            elif code < 300:
                self._move("2xx")
                self._stop("A", "B", "C")
                self._start("M", now, self._timers.timer_m)
                self._release_request()
            else:
                self._move("300-699")
                self._stop("A", "B", "C")
                self._ack_bytes = serialize(build_ack_for_non_2xx(self.request, response))
                self._release_request()
                self._send(self._ack_bytes)
                self._wait_then_end("D", now, self._timers.timer_d(self.reliable))
            self._output.emit(ResponseReceived(response, source, self.key))
        elif self.state is S.ACCEPTED and 200 <= code < 300:
            self._output.emit(ResponseReceived(response, source, self.key))
        elif self.state is S.COMPLETED and code >= 300 and self._ack_bytes is not None:
            self._send(self._ack_bytes, retransmission=True)
        # anything else (late 1xx, 2xx after a failure) is absorbed

    def transport_error(self) -> None:
        if (self.state, "transport_error") in self.TRANSITIONS:
            self._move("transport_error")
        else:
            self.terminate()

    def _on_timer(self, name: str, now: float) -> None:
        if name == "A":
            self._retransmit_request()
            interval = self._timers.next_interval(self._intervals["A"], cap_at_t2=False)
            self._start("A", now, interval)
        elif name in ("B", "C"):
            self._move(f"timer_{name}")
            self._timeout(name)
        else:  # D, M
            self._move(f"timer_{name}")


class ClientNonInviteTransaction(ClientTransactionBase):
    __slots__ = ()
    ROLE = "client"
    KIND = "non-INVITE"
    TRANSITIONS = {
        (S.TRYING, "1xx"): S.PROCEEDING,
        (S.TRYING, "200-699"): S.COMPLETED,
        (S.TRYING, "timer_F"): S.TERMINATED,
        (S.TRYING, "transport_error"): S.TERMINATED,
        (S.PROCEEDING, "1xx"): S.PROCEEDING,
        (S.PROCEEDING, "200-699"): S.COMPLETED,
        (S.PROCEEDING, "timer_F"): S.TERMINATED,
        (S.PROCEEDING, "transport_error"): S.TERMINATED,
        (S.COMPLETED, "timer_K"): S.TERMINATED,
    }

    def __init__(
        self,
        key: TransactionKey,
        request: Request,
        destination: TransportAddress,
        output: TransactionOutput,
        timers: TimerSettings,
        now: float,
    ) -> None:
        super().__init__(key, request, destination, output, timers, S.TRYING)
        if not self.reliable:
            self._start("E", now, timers.timer_e)
        self._start("F", now, timers.timer_f)

    def receive_response(self, response: Response, source: TransportAddress, now: float) -> None:
        if self.state not in (S.TRYING, S.PROCEEDING):
            return  # Completed absorbs retransmitted responses
        if response.code < 200:
            self._move("1xx")
        else:
            self._move("200-699")
            self._stop("E", "F")
            self._wait_then_end("K", now, self._timers.timer_k(self.reliable))
            self._release_request()
        self._output.emit(ResponseReceived(response, source, self.key))

    def transport_error(self) -> None:
        if (self.state, "transport_error") in self.TRANSITIONS:
            self._move("transport_error")
        else:
            self.terminate()

    def _on_timer(self, name: str, now: float) -> None:
        if name == "E":
            self._retransmit_request()
            if self.state is S.PROCEEDING:
                interval = self._timers.t2
            else:
                interval = self._timers.next_interval(self._intervals["E"], cap_at_t2=True)
            self._start("E", now, interval)
        elif name == "F":
            self._move("timer_F")
            self._timeout("F")
        else:  # K
            self._move("timer_K")


class ServerTransaction(Transaction):
    """Shared parts of both server transactions: the request and the last response sent."""

    __slots__ = ("_last_response_bytes", "_released_to_tag", "_request", "last_response", "source")

    def __init__(
        self,
        key: TransactionKey,
        request: Request,
        source: TransportAddress,
        destination: TransportAddress,
        output: TransactionOutput,
        timers: TimerSettings,
        initial: TransactionState,
    ) -> None:
        super().__init__(key, destination, output, timers, initial)
        self._request: Request | None = request
        self.source = source
        self.last_response: Response | None = None
        self._last_response_bytes: bytes | None = None
        self._released_to_tag: str | None = None

    @property
    def request(self) -> Request:
        """The request that created the transaction (a completed non-INVITE one has let it go)."""
        if self._request is None:
            raise LocalProtocolError(f"{self!r} no longer holds its request (it is completed)")
        return self._request

    def _release_messages(self) -> None:
        """Keep only the wire bytes of the final response: a transaction waiting out Timer J (32 s over
        UDP) then holds a handful of objects instead of two parsed messages (~70 objects), which is what
        the cyclic garbage collector walks on every full collection - at thousands of REGISTERs/s those
        walks otherwise stall the loop for long enough to cause retransmission storms."""
        if self.last_response is not None:
            self._released_to_tag = to_tag(self.last_response)
        self._request = None
        self.last_response = None

    def response_to_tag(self) -> str | None:
        """The To tag of the last response sent (kept when the messages are let go): a CANCEL's 200
        carries the same one (RFC 3261 §9.2)."""
        if self.last_response is not None:
            return to_tag(self.last_response)
        return self._released_to_tag

    def _send_response(self, response: Response) -> None:
        self.last_response = response
        self._last_response_bytes = serialize(response)
        self._send(self._last_response_bytes)

    def _resend_last(self) -> None:
        if self._last_response_bytes is not None:
            self._send(self._last_response_bytes, retransmission=True)


class ServerInviteTransaction(ServerTransaction):
    __slots__ = ("ack_key", "ack_received")
    ROLE = "server"
    KIND = "INVITE"
    TRANSITIONS = {
        (S.PROCEEDING, "1xx"): S.PROCEEDING,
        (S.PROCEEDING, "2xx"): S.ACCEPTED,
        (S.PROCEEDING, "300-699"): S.COMPLETED,
        (S.COMPLETED, "ACK"): S.CONFIRMED,
        (S.COMPLETED, "timer_H"): S.TERMINATED,
        (S.CONFIRMED, "timer_I"): S.TERMINATED,
        (S.ACCEPTED, "2xx"): S.ACCEPTED,
        (S.ACCEPTED, "timer_L"): S.TERMINATED,
    }

    def __init__(
        self,
        key: TransactionKey,
        request: Request,
        source: TransportAddress,
        destination: TransportAddress,
        output: TransactionOutput,
        timers: TimerSettings,
        now: float,
    ) -> None:
        super().__init__(key, request, source, destination, output, timers, S.PROCEEDING)
        self.ack_received = False
        # (Call-ID, CSeq number): how the endpoint matches the ACK for a 2xx, which has its own branch.
        self.ack_key: tuple[str, int] = (request.headers["Call-ID"], cseq_of(request).sequence)
        self._start("C", now, timers.timer_c)

    def receive_request(self, request: Request, now: float) -> bool:
        """A retransmitted INVITE or an ACK matched to this transaction. Returns True when the
        request must go up to the TU (an ACK for our 2xx, RFC 6026 Accepted state)."""
        if request.method == "ACK":
            if self.state is S.COMPLETED:
                self._move("ACK")
                self._stop("G", "H")
                self._wait_then_end("I", now, self._timers.timer_i(self.reliable))
                return False
            if self.state is S.ACCEPTED:
                self.acknowledge_2xx()
                return True
            return False
        if self.state in (S.PROCEEDING, S.COMPLETED):
            self._resend_last()
        return False  # Accepted absorbs INVITE retransmissions (RFC 6026 §8.7)

    def acknowledge_2xx(self) -> None:
        """The ACK for our 2xx arrived (end-to-end, usually with its own branch)."""
        self.ack_received = True
        self._stop("2xx")

    def respond(self, response: Response, now: float) -> None:
        code = response.code
        if code < 200:
            self._move("1xx")
            self._send_response(response)
        elif code < 300:
            first = self.state is S.PROCEEDING
            self._move("2xx")
            self._send_response(response)
            if first:
                self._stop("C")
                self._start("L", now, self._timers.timer_l)
                if not self.reliable:
                    self._start("2xx", now, self._timers.t1)
            self._release_messages()  # Accepted resends the 2xx bytes, absorbs INVITEs, passes ACKs up
        else:
            self._move("300-699")
            self._send_response(response)
            self._stop("C")
            if not self.reliable:
                self._start("G", now, self._timers.timer_g)
            self._start("H", now, self._timers.timer_h)
            self._release_messages()  # Completed resends the bytes and waits for the ACK

    def _on_timer(self, name: str, now: float) -> None:
        if name in ("G", "2xx"):
            self._resend_last()
            self._start(name, now, self._timers.next_interval(self._intervals[name], cap_at_t2=True))
        elif name == "H":
            self._move("timer_H")
            self._timeout("H")
        elif name == "I":
            self._move("timer_I")
        elif name == "L":
            self._move("timer_L")
            if not self.ack_received:
                self._timeout("L")
        elif name == "C":
            # The TU never answered: end it the way a proxy's Timer C would.
            self._timeout("C")
            tag = to_tag(self.last_response) if self.last_response is not None else None
            self.respond(build_response(self.request, 408, to_tag=tag), now)


class ServerNonInviteTransaction(ServerTransaction):
    __slots__ = ()
    ROLE = "server"
    KIND = "non-INVITE"
    TRANSITIONS = {
        (S.TRYING, "1xx"): S.PROCEEDING,
        (S.TRYING, "200-699"): S.COMPLETED,
        (S.TRYING, "guard"): S.TERMINATED,
        (S.PROCEEDING, "1xx"): S.PROCEEDING,
        (S.PROCEEDING, "200-699"): S.COMPLETED,
        (S.PROCEEDING, "guard"): S.TERMINATED,
        (S.COMPLETED, "timer_J"): S.TERMINATED,
    }

    def __init__(
        self,
        key: TransactionKey,
        request: Request,
        source: TransportAddress,
        destination: TransportAddress,
        output: TransactionOutput,
        timers: TimerSettings,
        now: float,
    ) -> None:
        super().__init__(key, request, source, destination, output, timers, S.TRYING)
        self._start("guard", now, timers.server_non_invite_guard)

    def receive_request(self, request: Request, now: float) -> bool:
        if self.state in (S.PROCEEDING, S.COMPLETED):
            self._resend_last()
        return False

    def respond(self, response: Response, now: float) -> None:
        if response.code < 200:
            self._move("1xx")
            self._send_response(response)
        else:
            self._move("200-699")
            self._send_response(response)
            self._stop("guard")
            self._wait_then_end("J", now, self._timers.timer_j(self.reliable))
            self._release_messages()  # Completed only resends the bytes

    def _on_timer(self, name: str, now: float) -> None:
        if name == "guard":
            self._move("guard")
            self._timeout("guard")
        else:  # J
            self._move("timer_J")


ClientTransaction = ClientInviteTransaction | ClientNonInviteTransaction
AnyServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction
