"""The SIP endpoint: transaction manager between transports and the transaction user (sans-IO).

    endpoint = SipEndpoint(local_addresses={"udp": ("192.0.2.1", 5060)})
    endpoint.receive(data, source, now)           # bytes from any transport
    while (event := endpoint.next_event()) is not None:
        ...                                        # RequestReceived, ResponseReceived, TransactionTimeout,
                                                   # TransportError
    endpoint.respond(event.transaction, build_response(event.request, 200), now)
    key = endpoint.send_request(request, TransportAddress("udp", "198.51.100.7", 5060), now)
    endpoint.send_stateless(ack, destination)      # the ACK for a 2xx (end-to-end, no transaction)
    for data, destination in endpoint.datagrams_to_send(): ...
    deadline = endpoint.get_timer(); ...; endpoint.handle_timer(deadline)

Commands only change state; bytes come out of ``datagrams_to_send()``. No clock is read.

What the endpoint does on its own (the RFC's transaction/transport duties, never the TU's):
* matches responses to client transactions (§17.1.3) and requests to server transactions (§17.2.3:
  branch + sent-by + method, ACK to its INVITE; CANCEL finds the INVITE it cancels); requests
  without a magic-cookie branch (RFC 2543) get a key from Call-ID/From tag/CSeq/top Via;
* stamps ``received`` / ``rport`` on the top Via of every request (RFC 3581) and routes responses
  per §18.2.2 (over the connection the request came in on for TCP/TLS/WS);
* answers statelessly: 400 to requests too broken to parse (when a Via is readable), 503 when the
  transaction table is full, 503 to a share of new INVITEs while the node is overloaded (``overload``);
  answers through a transaction: 100 Trying to INVITEs, 483 when
  Max-Forwards is 0 (not OPTIONS), 482 for merged requests (§8.2.2.2), 200/481 to CANCEL;
* passes ACKs for 2xx up to the TU (and stops the 2xx retransmissions of the INVITE they ack);
* lets the TU answer a new non-INVITE request without a transaction (``stateless_responder``, RFC 3261
  §8.2.7 stateless UAS: "the most common use of a stateless UAS is to respond to an unauthenticated
  request with a challenge"). A retransmission is then answered afresh; nothing lingers for Timer J.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import weakref
from collections.abc import Callable

from signaling.sip.errors import LocalProtocolError
from signaling.sip.events import (
    Event,
    RequestReceived,
    TransactionKey,
    TransactionTimeout,
    TransportError,
)
from signaling.sip.message import (
    BRANCH_MAGIC_COOKIE,
    DEFAULT_LIMITS,
    CSeq,
    MessageParseError,
    ParseLimits,
    Request,
    Response,
    SipMessage,
    Via,
    address_tag,
    build_response,
    cseq_of,
    from_tag,
    max_forwards,
    new_branch,
    parse_with_keys,
    replace_top_via,
    serialize,
    top_via,
)
from signaling.sip.overload import OverloadControl
from signaling.sip.routing import (
    DEFAULT_PORTS,
    TransportAddress,
    response_destination,
    stamp_and_route,
    stamp_received,
)
from signaling.sip.timers import DEFAULT_TIMERS, TimerSettings
from signaling.sip.transaction import (
    AnyServerTransaction,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    Transaction,
    TransactionState,
)


@dataclasses.dataclass(slots=True)
class EndpointStats:
    """Counters for metrics export (monotonic; ``active_transactions`` lives on the endpoint)."""

    messages_in: int = 0
    messages_out: int = 0
    requests_in: int = 0
    responses_in: int = 0
    parse_errors: int = 0
    bad_requests_sent: int = 0
    stateless_responses_sent: int = 0
    retransmissions_sent: int = 0
    retransmissions_absorbed: int = 0
    stray_responses: int = 0
    stray_acks: int = 0
    transactions_created: int = 0
    transactions_terminated: int = 0
    transaction_timeouts: int = 0
    loops_detected: int = 0
    too_many_hops: int = 0
    overload_rejections: int = 0
    invites_shed: int = 0
    transport_errors: int = 0
    timer_compactions: int = 0  # stale timer entries dropped in bulk (see SipEndpoint._compact_timers)

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


_MergeKey = tuple[str, str, int, str]  # From tag, Call-ID, CSeq number, method
StatelessResponder = Callable[[Request, TransportAddress], Response | None]
"""``(request, source) -> response`` to send without a transaction, or None to go on statefully."""
# Deadline, sequence (ties: transactions are never compared), the transaction. Weakly: an entry goes
# stale when its transaction's deadline moves (Timer C's 3 minutes, replaced by Timer L's 32 s when the
# INVITE is answered) and stays queued until its time comes or a compaction drops it; a strong reference
# kept each finished INVITE transaction, its key and its address alive for those 3 minutes (~180 s x 2
# per call, ~80 MB at 150 calls/s, walked by the older GC generations) instead of letting it go when it
# is forgotten.
_TimerEntry = tuple[float, int, "weakref.ReferenceType[Transaction]"]
_COMPACT_MIN = 1024  # queue size below which stale timer entries are left to come up on their own
_TERMINATED = TransactionState.TERMINATED  # ``tx.terminated`` without a property call on the hot paths
_AckKey = tuple[str, int]  # Call-ID, CSeq number


class SipEndpoint:
    """Transaction layer + stateless transport duties for one SIP node (see module docstring)."""

    def __init__(
        self,
        *,
        local_addresses: dict[str, tuple[str, int]] | None = None,
        timers: TimerSettings = DEFAULT_TIMERS,
        limits: ParseLimits = DEFAULT_LIMITS,
        max_transactions: int = 50_000,
        send_trying: bool = True,
        stateless_responder: StatelessResponder | None = None,
        overload: OverloadControl | None = None,
    ) -> None:
        self.local_addresses = dict(local_addresses or {})
        self.timers = timers
        self.limits = limits
        self.max_transactions = max_transactions
        self.send_trying = send_trying
        self.stateless_responder = stateless_responder
        """Consulted for every new non-INVITE request (not ACK or CANCEL, nor one with Max-Forwards 0 or
        merged with a live transaction, which the endpoint answers itself): a response it returns is sent
        statelessly. It must only answer what a stateless UAS may (§8.2.7), e.g. a digest challenge, and
        build its To tag from the request alone (the same request must get the same tag)."""
        self.overload = overload
        """Asked about every new dialog-creating INVITE: while the node is overloaded it answers a share of
        them 503 statelessly (``stats.invites_shed``); see signaling/sip/overload.py."""
        self.stats = EndpointStats()
        self._client: dict[TransactionKey, ClientTransaction] = {}
        self._server: dict[TransactionKey, AnyServerTransaction] = {}
        self._merge_index: dict[_MergeKey, TransactionKey] = {}
        self._merge_key_of: dict[TransactionKey, _MergeKey] = {}
        self._accepted: dict[_AckKey, TransactionKey] = {}
        # The live transactions by where they send (transport, host, port) and by the connection they
        # send over: a transport error ends those at once. Scanning every transaction instead cost ~9 ms
        # at 50,000 of them, for each failed connect: a dead TCP/TLS trunk address under load would have
        # taken the whole core. Dicts as ordered sets: transactions are told in the order they started.
        self._by_target: dict[tuple[str, str, int], dict[TransactionKey, None]] = {}
        self._by_connection: dict[str, dict[TransactionKey, None]] = {}
        self._events: collections.deque[Event] = collections.deque()
        self._outgoing: list[tuple[bytes, TransportAddress]] = []
        # Timer entries (deadline, sequence, transaction). Most deadlines are ``now`` plus one of a few
        # fixed durations (Timer J and the guard: 64*T1), so they arrive in order: those go to the tail of a
        # FIFO in O(1); only a deadline earlier than the FIFO's tail (retransmission timers) takes the heap.
        # An entry is stale when its transaction's deadline moved on; it is skipped when it comes up, and
        # dropped earlier by a compaction once stale entries would outnumber half the live ones.
        self._heap: list[_TimerEntry] = []
        self._fifo: collections.deque[_TimerEntry] = collections.deque()
        self._sequence = itertools.count()
        self._compact_at = _COMPACT_MIN

    # ------------------------------------------------------------------ public surface

    @property
    def active_transactions(self) -> int:
        return len(self._client) + len(self._server)

    def client_transaction(self, key: TransactionKey) -> ClientTransaction | None:
        return self._client.get(key)

    def server_transaction(self, key: TransactionKey) -> AnyServerTransaction | None:
        return self._server.get(key)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[tuple[bytes, TransportAddress]]:
        out, self._outgoing = self._outgoing, []
        return out

    def get_timer(self) -> float | None:
        while (entry := self._next_entry()) is not None:
            when, _seq, ref = entry
            tx = ref()
            if tx is not None and tx.state is not _TERMINATED and tx.get_timer() == when:
                return when
            self._pop_entry(entry)  # stale entry: the timer was re-armed, stopped or the tx ended
            if tx is not None and tx.scheduled_at == when:
                tx.scheduled_at = None
        return None

    def handle_timer(self, now: float) -> None:
        due: dict[int, Transaction] = {}
        while (entry := self._next_entry()) is not None and entry[0] <= now:
            self._pop_entry(entry)
            when, _seq, ref = entry
            tx = ref()
            if tx is not None and tx.state is not _TERMINATED and tx.get_timer() == when:
                due[id(tx)] = tx
        for tx in due.values():
            tx.scheduled_at = None  # its heap entry is gone: _after must push a fresh one
            tx.handle_timer(now)
            self._after(tx)

    def receive(self, data: bytes, source: TransportAddress, now: float) -> None:
        """Feed one datagram / one framed stream message. Never raises for any input bytes."""
        self.stats.messages_in += 1
        try:
            parsed = parse_with_keys(data, self.limits)
        except MessageParseError as error:
            self.stats.parse_errors += 1
            self._reply_to_broken(error, source)
            return
        message = parsed.message
        try:
            if isinstance(message, Request):
                self.stats.requests_in += 1
                self._receive_request(message, parsed.top_via, parsed.cseq, source, now)
            else:
                self.stats.responses_in += 1
                self._receive_response(message, parsed.top_via, parsed.cseq, source, now)
        except ValueError:
            # A header sipmessage only parses on demand was broken: drop, count, carry on.
            self.stats.parse_errors += 1

    def send_request(self, request: Request, destination: TransportAddress, now: float) -> TransactionKey:
        """Start a client transaction. A missing top Via is added from ``local_addresses``."""
        if request.method == "ACK":
            raise LocalProtocolError("ACK is sent with send_stateless(), not in a transaction")
        if not request.headers.getlist("Via"):
            host, port = self._local_address(destination.transport)
            transport = destination.transport.upper()
            request.headers.setlist("Via", [f"SIP/2.0/{transport} {host}:{port};branch={new_branch()};rport"])
        via = top_via(request)
        branch = via.parameters.get("branch")
        if not branch or not branch.startswith(BRANCH_MAGIC_COOKIE):
            raise LocalProtocolError("a request we send needs a z9hG4bK branch in its top Via")
        key = TransactionKey("client", branch, request.method)
        if key in self._client:
            raise LocalProtocolError(f"client transaction {branch} {request.method} already exists")
        tx: ClientTransaction
        if request.method == "INVITE":
            tx = ClientInviteTransaction(key, request, destination, self, self.timers, now)
        else:
            tx = ClientNonInviteTransaction(key, request, destination, self, self.timers, now)
        self._client[key] = tx
        self._index(tx)
        self.stats.transactions_created += 1
        self._after(tx)
        return key

    def respond(self, transaction: TransactionKey, response: Response, now: float) -> None:
        """Send ``response`` through server transaction ``transaction``."""
        tx = self._server.get(transaction)
        if tx is None:
            raise LocalProtocolError(f"no server transaction {transaction.branch} {transaction.method}")
        tx.respond(response, now)
        if isinstance(tx, ServerInviteTransaction) and tx.state is TransactionState.ACCEPTED:
            self._accepted[tx.ack_key] = tx.key
        self._after(tx)

    def send_stateless(self, message: SipMessage, destination: TransportAddress) -> None:
        """Send without a transaction (ACK for a 2xx, stateless responses)."""
        self.transmit(serialize(message), destination, retransmission=False)

    def transport_error(self, destination: TransportAddress, reason: str, now: float) -> None:
        """The transport could not reach ``destination``: end every transaction sending there (to its
        transport, host and port, or over its connection), client transactions first."""
        self.stats.transport_errors += 1
        keys = dict(self._by_target.get((destination.transport, destination.host, destination.port), {}))
        if destination.connection_id is not None:
            keys.update(self._by_connection.get(destination.connection_id, {}))
        hit = False
        for role, table in (("client", self._client), ("server", self._server)):
            for key in keys:
                tx = table.get(key) if key.role == role else None
                if tx is None:
                    continue
                hit = True
                tx.transport_error()
                self.emit(TransportError(tx.key, destination, reason))
                self._after(tx)
        if not hit:
            self.emit(TransportError(None, destination, reason))

    def _index(self, tx: Transaction) -> None:
        destination = tx.destination
        target = (destination.transport, destination.host, destination.port)
        found = self._by_target.get(target)
        if found is None:
            found = self._by_target[target] = {}
        found[tx.key] = None
        if destination.connection_id is not None:
            self._by_connection.setdefault(destination.connection_id, {})[tx.key] = None

    def _unindex(self, tx: Transaction) -> None:
        destination = tx.destination
        target = (destination.transport, destination.host, destination.port)
        found = self._by_target.get(target)
        if found is not None:
            found.pop(tx.key, None)
            if not found:
                del self._by_target[target]
        if destination.connection_id is not None:
            found = self._by_connection.get(destination.connection_id)
            if found is not None:
                found.pop(tx.key, None)
                if not found:
                    del self._by_connection[destination.connection_id]

    # ------------------------------------------------------------------ TransactionOutput

    def transmit(self, data: bytes, destination: TransportAddress, *, retransmission: bool) -> None:
        self.stats.messages_out += 1
        if retransmission:
            self.stats.retransmissions_sent += 1
        self._outgoing.append((data, destination))

    def emit(self, event: Event) -> None:
        if isinstance(event, TransactionTimeout):
            self.stats.transaction_timeouts += 1
        self._events.append(event)

    # ------------------------------------------------------------------ internals

    def _local_address(self, transport: str) -> tuple[str, int]:
        address = self.local_addresses.get(transport)
        if address is None:
            raise LocalProtocolError(f"no local address configured for {transport}")
        return address

    def _after(self, tx: Transaction) -> None:
        """Re-arm the heap for ``tx`` or forget it once terminated."""
        if tx.state is _TERMINATED:
            self._forget(tx)
            return
        deadline = tx.get_timer()
        if deadline is not None and deadline != tx.scheduled_at:
            # One live entry per deadline change; stale ones are skipped when popped.
            tx.scheduled_at = deadline
            entry = (deadline, next(self._sequence), weakref.ref(tx))
            fifo = self._fifo
            if not fifo or fifo[-1][0] <= deadline:
                fifo.append(entry)
            else:
                heapq.heappush(self._heap, entry)
            if len(fifo) + len(self._heap) > self._compact_at:
                self._compact_timers()

    def _compact_timers(self) -> None:
        """Drop the stale entries. Answering an INVITE leaves its 3-minute Timer C entry queued behind
        the live 32-second ones: at 500 calls/s that was ~180,000 stale entries (a tuple and a weak
        reference each: ~10 MB, and part of what every older-generation collection walks). Run when
        the queue has grown by half its live entries since the last compaction, so each costs O(queue)
        and is paid for by as many stale entries: O(1) per entry, the queue at most ~1.5x what is live.
        An entry is kept while its transaction is alive and still scheduled at that deadline: a live
        timer is never dropped."""

        def live(entry: _TimerEntry) -> bool:
            tx = entry[2]()
            return tx is not None and tx.state is not _TERMINATED and tx.scheduled_at == entry[0]

        self._fifo = collections.deque(entry for entry in self._fifo if live(entry))
        heap = [entry for entry in self._heap if live(entry)]
        heapq.heapify(heap)
        self._heap = heap
        remaining = len(self._fifo) + len(heap)
        self._compact_at = max(_COMPACT_MIN, remaining + (remaining >> 1))
        self.stats.timer_compactions += 1

    @property
    def queued_timers(self) -> int:
        """Timer entries queued, stale ones included (bounded by the compaction)."""
        return len(self._fifo) + len(self._heap)

    def _next_entry(self) -> _TimerEntry | None:
        """The earliest timer entry (FIFO head or heap top), left in place."""
        fifo, heap = self._fifo, self._heap
        if not fifo:
            return heap[0] if heap else None
        if not heap:
            return fifo[0]
        return fifo[0] if fifo[0][:2] <= heap[0][:2] else heap[0]

    def _pop_entry(self, entry: _TimerEntry) -> None:
        """Remove ``entry``, which :meth:`_next_entry` just returned."""
        if self._fifo and self._fifo[0] is entry:
            self._fifo.popleft()
        else:
            heapq.heappop(self._heap)

    def _forget(self, tx: Transaction) -> None:
        key = tx.key
        table: dict[TransactionKey, ClientTransaction] | dict[TransactionKey, AnyServerTransaction]
        table = self._client if key.role == "client" else self._server
        if table.get(key) is tx:
            del table[key]
            self._unindex(tx)
            self.stats.transactions_terminated += 1
            merge_key = self._merge_key_of.pop(key, None)
            if merge_key is not None and self._merge_index.get(merge_key) == key:
                del self._merge_index[merge_key]
            if isinstance(tx, ServerInviteTransaction):
                if self._accepted.get(tx.ack_key) == key:
                    del self._accepted[tx.ack_key]

    def _reply_to_broken(self, error: MessageParseError, source: TransportAddress) -> None:
        reply = error.build_reply()
        if reply is None:
            return
        destination = source
        try:
            via = stamp_received(top_via(reply), source)
            destination = response_destination(via, source)
        except ValueError:
            pass  # unreadable Via: answer the packet's source
        self.stats.stateless_responses_sent += 1
        if reply.code == 400:
            self.stats.bad_requests_sent += 1
        self.send_stateless(reply, destination)

    def _server_key(self, request: Request, via: Via, cseq: CSeq) -> TransactionKey:
        port = via.port or DEFAULT_PORTS.get(via.transport.lower(), 5060)
        sent_by = f"{via.host.lower()}:{port}"
        method = "INVITE" if request.method == "ACK" else request.method
        branch = via.parameters.get("branch")
        if branch and branch.startswith(BRANCH_MAGIC_COOKIE):
            return TransactionKey("server", branch, method, sent_by)
        # RFC 2543 peers: no usable branch. Good enough to absorb retransmissions; never crashes.
        legacy = "|".join(
            (
                "2543",
                request.headers.get("Call-ID") or "",
                from_tag(request) or "",
                str(cseq.sequence),
                str(request.uri),
                branch or "",
            )
        )
        return TransactionKey("server", legacy, method, sent_by)

    def _receive_request(
        self, request: Request, via: Via, cseq: CSeq, source: TransportAddress, now: float
    ) -> None:
        stamped_via, destination = stamp_and_route(via, source)
        if stamped_via is not None:
            replace_top_via(request, stamped_via)
        key = self._server_key(request, via, cseq)
        method = request.method
        existing = self._server.get(key)
        if existing is not None:
            if method != "ACK":
                self.stats.retransmissions_absorbed += 1
            pass_up = existing.receive_request(request, now)
            self._after(existing)
            if pass_up:
                self.emit(RequestReceived(request, source, None))
            return
        if method == "ACK":
            self._receive_ack_for_2xx(request, source)
            return

        headers = request.headers
        merge_key: _MergeKey | None = None
        to_value = headers.get("To")
        if to_value is None or address_tag(to_value) is None:
            from_value = headers.get("From")
            from_tag_value = address_tag(from_value) if from_value is not None else None
            merge_key = (from_tag_value or "", headers["Call-ID"], cseq.sequence, method)
        hop_limit_reached = method != "OPTIONS" and max_forwards(request) == 0

        responder = self.stateless_responder
        if (
            responder is not None
            and method != "INVITE"
            and method != "CANCEL"
            and not hop_limit_reached
            and (merge_key is None or merge_key not in self._merge_index)
        ):
            response = responder(request, source)
            if response is not None:
                self.stats.stateless_responses_sent += 1
                self.send_stateless(response, destination)
                return

        overload = self.overload
        if overload is not None and method == "INVITE" and merge_key is not None:
            refusal_tag = overload.refusal_tag(key, now)
            if refusal_tag is not None:
                self.stats.invites_shed += 1
                self._respond_stateless(request, destination, 503, overload.response_headers, refusal_tag)
                return

        if len(self._client) + len(self._server) >= self.max_transactions:
            self.stats.overload_rejections += 1
            self._respond_stateless(request, destination, 503, (("Retry-After", "5"),))
            return

        tx: AnyServerTransaction
        if method == "INVITE":
            tx = ServerInviteTransaction(key, request, source, destination, self, self.timers, now)
        else:
            tx = ServerNonInviteTransaction(key, request, source, destination, self, self.timers, now)
        self._server[key] = tx
        self._index(tx)
        self.stats.transactions_created += 1

        if hop_limit_reached:
            self.stats.too_many_hops += 1
            tx.respond(build_response(request, 483), now)
        elif merge_key is not None and self._merge_index.get(merge_key, key) != key:
            # §8.2.2.2: same From tag, Call-ID and CSeq as a live transaction but another branch.
            self.stats.loops_detected += 1
            tx.respond(build_response(request, 482), now)
        elif method == "CANCEL":
            self._receive_cancel(tx, request, source, key, now)
        else:
            if merge_key is not None:
                self._merge_index[merge_key] = key
                self._merge_key_of[key] = merge_key
            if method == "INVITE" and self.send_trying:
                tx.respond(build_response(request, 100), now)
            self.emit(RequestReceived(request, source, key))
        self._after(tx)

    def _receive_cancel(
        self,
        tx: AnyServerTransaction,
        cancel: Request,
        source: TransportAddress,
        key: TransactionKey,
        now: float,
    ) -> None:
        invite_key = key._replace(method="INVITE")
        invite_tx = self._server.get(invite_key)
        if invite_tx is None:
            tx.respond(build_response(cancel, 481), now)
            return
        tx.respond(build_response(cancel, 200, to_tag=invite_tx.response_to_tag()), now)
        if invite_tx.state is TransactionState.PROCEEDING:
            self.emit(RequestReceived(cancel, source, key, cancels=invite_key))

    def _receive_ack_for_2xx(self, ack: Request, source: TransportAddress) -> None:
        try:
            ack_key = (ack.headers["Call-ID"], cseq_of(ack).sequence)
        except (KeyError, ValueError):
            self.stats.stray_acks += 1
            return
        invite_key = self._accepted.get(ack_key)
        if invite_key is not None:
            invite_tx = self._server.get(invite_key)
            if isinstance(invite_tx, ServerInviteTransaction):
                invite_tx.acknowledge_2xx()
                self._after(invite_tx)
        else:
            self.stats.stray_acks += 1
        self.emit(RequestReceived(ack, source, None))

    def _receive_response(
        self, response: Response, via: Via, cseq: CSeq, source: TransportAddress, now: float
    ) -> None:
        branch = via.parameters.get("branch") or ""
        key = TransactionKey("client", branch, cseq.method)
        tx = self._client.get(key)
        if tx is None:
            self.stats.stray_responses += 1  # §18.1.2 / RFC 6026: discard
            return
        tx.receive_response(response, source, now)
        self._after(tx)

    def _respond_stateless(
        self,
        request: Request,
        destination: TransportAddress,
        status_code: int,
        headers: tuple[tuple[str, str], ...] = (),
        to_tag: str | None = None,
    ) -> None:
        self.stats.stateless_responses_sent += 1
        response = build_response(request, status_code, to_tag=to_tag, headers=headers)
        self.send_stateless(response, destination)
