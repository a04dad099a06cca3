"""Reliable provisional responses (RFC 3262): RSeq/RAck values and the UAS retransmission state.

:class:`ReliableProvisionals` keeps, for one INVITE server transaction, the reliable 1xx being
retransmitted (T1 doubling) until its PRACK arrives, the ones queued behind it (only one may be
unacknowledged at a time, RFC 3262 §3) and the 64*T1 give-up deadline. Time is passed in.
"""

from __future__ import annotations

import collections
import dataclasses
import re

from signaling.sip.message import Response

__all__ = ["RAck", "ReliableProvisionals", "rseq_of"]

RSEQ_MAX = 2**31 - 1
_RACK_RE = re.compile(r"\s*([0-9]{1,10})\s+([0-9]{1,10})\s+([A-Za-z0-9\-.!%*_+`'~]+)\s*")


@dataclasses.dataclass(frozen=True, slots=True)
class RAck:
    rseq: int
    cseq: int
    method: str

    @classmethod
    def parse(cls, value: str) -> RAck:
        match = _RACK_RE.fullmatch(value)
        if match is None:
            raise ValueError(f"RAck {value!r} is not 'response-num CSeq-num Method'")
        return cls(int(match.group(1)), int(match.group(2)), match.group(3))

    def __str__(self) -> str:
        return f"{self.rseq} {self.cseq} {self.method}"


def rseq_of(response: Response) -> int | None:
    """The RSeq of a response; ``None`` when absent or not a number in 1..2**31-1."""
    value = response.headers.get("RSeq")
    if value is None or not value.strip().isdigit() or len(value.strip()) > 10:
        return None
    number = int(value.strip())
    return number if 1 <= number <= RSEQ_MAX else None


@dataclasses.dataclass(slots=True)
class _InFlight:
    response: Response
    rseq: int
    interval: float
    next_send: float
    give_up_at: float


class ReliableProvisionals:
    """UAS side of RFC 3262 for one INVITE. ``first_rseq`` comes from the caller's random source."""

    def __init__(self, first_rseq: int, t1: float, max_queued: int = 8) -> None:
        if not 1 <= first_rseq <= RSEQ_MAX:
            raise ValueError("the first RSeq must be in 1..2**31-1")
        self._next_rseq = first_rseq
        self._t1 = t1
        self._max_queued = max_queued
        self._in_flight: _InFlight | None = None
        self._queue: collections.deque[Response] = collections.deque()

    @property
    def unacknowledged(self) -> Response | None:
        return self._in_flight.response if self._in_flight is not None else None

    @property
    def pending(self) -> bool:
        return self._in_flight is not None or bool(self._queue)

    def stamp(self, response: Response) -> int:
        """Give ``response`` the next RSeq and ``Require: 100rel``; returns the RSeq."""
        rseq = self._next_rseq
        self._next_rseq = rseq + 1 if rseq < RSEQ_MAX else 1
        response.headers.set("RSeq", str(rseq))
        if not any("100rel" in value.lower() for value in response.headers.getlist("Require")):
            response.headers.add("Require", "100rel")
        return rseq

    def send(self, response: Response, now: float) -> Response | None:
        """Queue a reliable 1xx; returns the response to transmit now (``None``: it waits its turn).

        Raises ``OverflowError`` when too many wait behind an unacknowledged one.
        """
        if self._in_flight is None:
            return self._launch(response, now)
        if len(self._queue) >= self._max_queued:
            raise OverflowError("too many reliable provisional responses wait for a PRACK")
        self._queue.append(response)
        return None

    def _launch(self, response: Response, now: float) -> Response:
        rseq = self.stamp(response)
        self._in_flight = _InFlight(response, rseq, self._t1, now + self._t1, now + 64 * self._t1)
        return response

    def prack(self, rack: RAck, invite_cseq: int, now: float) -> tuple[Response | None, Response | None]:
        """A PRACK arrived. Returns (the acknowledged response or ``None`` if it matches none,
        the next queued response to transmit now or ``None``)."""
        flight = self._in_flight
        if flight is None or rack.rseq != flight.rseq or rack.cseq != invite_cseq or rack.method != "INVITE":
            return None, None
        self._in_flight = None
        following = self._launch(self._queue.popleft(), now) if self._queue else None
        return flight.response, following

    def stop(self) -> None:
        """The final response went out: no more retransmissions (RFC 3262 §3)."""
        self._in_flight = None
        self._queue.clear()

    def get_timer(self) -> float | None:
        flight = self._in_flight
        if flight is None:
            return None
        return min(flight.next_send, flight.give_up_at)

    def handle_timer(self, now: float) -> tuple[Response | None, bool]:
        """Returns (the response to retransmit or ``None``, whether the 64*T1 deadline passed)."""
        flight = self._in_flight
        if flight is None:
            return None, False
        if now >= flight.give_up_at:
            self.stop()
            return None, True
        if now >= flight.next_send:
            flight.interval *= 2
            flight.next_send = now + flight.interval
            return flight.response, False
        return None, False
