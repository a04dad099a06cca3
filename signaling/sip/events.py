"""Events the SIP endpoint hands to the transaction user (small frozen dataclasses, one base class)."""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

from sipmessage import Request, Response

from signaling.sip.routing import TransportAddress

Role = Literal["client", "server"]


class TransactionKey(NamedTuple):
    """Identifies a transaction (§17.1.3 client: branch + method; §17.2.3 server: branch + sent-by +
    method, with ACK folded into INVITE). RFC 2543 requests without a magic-cookie branch get a
    synthetic ``branch`` built from Call-ID, From tag, CSeq and top Via.

    A named tuple (immutable like a frozen dataclass): it keys the endpoint's tables, and a tuple hashes
    and compares in C, a dataclass through a Python call, several times per request."""

    role: Role
    branch: str
    method: str
    sent_by: str = ""


class Event:
    """Marker base class of every endpoint event."""

    __slots__ = ()


@dataclasses.dataclass(frozen=True, slots=True)
class RequestReceived(Event):
    """A new request for the TU. ``transaction`` is the server transaction to ``respond()`` on;
    ``None`` for an ACK to a 2xx (end-to-end, no transaction). For a CANCEL (already answered
    200/481 by the endpoint) ``cancels`` is the INVITE transaction it cancels, if still Proceeding:
    the TU should then answer that INVITE with 487."""

    request: Request
    source: TransportAddress
    transaction: TransactionKey | None
    cancels: TransactionKey | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    """A response for the TU, matched to the client transaction that sent the request. With RFC
    6026 every retransmitted or forked 2xx to an INVITE is passed up (the TU ACKs each one)."""

    response: Response
    source: TransportAddress
    transaction: TransactionKey


@dataclasses.dataclass(frozen=True, slots=True)
class TransactionTimeout(Event):
    """A transaction gave up: ``timer`` is "B"/"F" (no response), "H" (no ACK for a non-2xx),
    "L" (no ACK for a 2xx), "C" (INVITE stuck in Proceeding) or "guard" (TU never answered)."""

    transaction: TransactionKey
    timer: str


@dataclasses.dataclass(frozen=True, slots=True)
class TransportError(Event):
    """Sending failed (connection refused or gone); the transaction, if any, is terminated."""

    transaction: TransactionKey | None
    destination: TransportAddress
    reason: str
