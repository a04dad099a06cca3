"""sip-core: the pure SIP stack (message layer + transaction layer), no sockets, one thread.

Workloads:

* ``parse`` — ``signaling.sip.message.parse_message`` (framing, limits, validation of the mandatory
  headers) over a mix of an INVITE with SDP, a REGISTER with digest credentials and a 200 OK with SDP;
* ``server transactions`` — one endpoint receives REGISTERs (fresh branch each) and answers 200 through
  its server transaction: parse, match, received/rport, respond, serialise; the virtual clock moves
  1 ms per request and timers fire, so the transaction table stays at its steady-state size;
* ``calls`` — two endpoints wired in memory run INVITE/100/180/200/ACK + BYE/200 (7 messages a call,
  both stacks' work counted), the 2xx ACK built by a tiny TU as the dialog layer would.

Also: bytes of Python heap per live INVITE server transaction (tracemalloc over 10,000 of them).
"""

from __future__ import annotations

import gc
import statistics
import tracemalloc
from collections.abc import Callable

from bench.framework import ProgressTask, Suite, SuiteContext, SuiteResult, monotonic
from signaling.sip.endpoint import SipEndpoint
from signaling.sip.events import RequestReceived, ResponseReceived
from signaling.sip.message import (
    Request,
    Response,
    build_request,
    build_response,
    parse_message,
    serialize,
    to_tag,
)
from signaling.sip.routing import TransportAddress

# 1,000 calls/s through a B2BUA is two legs of 7 messages each = 14,000 messages/s through the stack;
# the stack should leave most of one core to media and the application: that rate within half a core.
TARGET_STACK_MESSAGES_RATE = 28_000.0
TARGET_PARSE_RATE = 21_000.0

ALICE = TransportAddress("udp", "198.51.100.23", 5060)
EDGE = TransportAddress("udp", "203.0.113.10", 5060)

SDP = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 198.51.100.23\r\ns=-\r\nc=IN IP4 198.51.100.23\r\n"
    b"t=0 0\r\nm=audio 49170 RTP/AVP 111 0 8 101\r\na=rtpmap:111 opus/48000/2\r\n"
    b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)

AUTHORIZATION = (
    'Digest username="alice", realm="example.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
    'uri="sip:example.com", response="6629fae49393a05397450978507c4ef1", algorithm=MD5, '
    'cnonce="0a4f113b", qop=auth, nc=00000001'
)


def register(branch: str, cseq: int = 1) -> Request:
    return build_request(
        "REGISTER",
        "sip:example.com",
        from_uri="<sip:alice@example.com>",
        to_uri="<sip:alice@example.com>",
        via_host="198.51.100.23",
        via_port=5060,
        branch=branch,
        call_id="reg-1@198.51.100.23",
        from_tag="a73kszlfl",
        cseq=cseq,
        contact="<sip:alice@198.51.100.23:5060>;expires=600",
        headers=[("Authorization", AUTHORIZATION), ("Expires", "600"), ("User-Agent", "bench")],
    )


def invite(branch: str, call_id: str) -> Request:
    return build_request(
        "INVITE",
        "sip:bob@example.com",
        from_uri='"Alice" <sip:alice@example.com>',
        to_uri="<sip:bob@example.com>",
        via_host="198.51.100.23",
        via_port=5060,
        branch=branch,
        call_id=call_id,
        contact="<sip:alice@198.51.100.23:5060>",
        headers=[("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE"), ("Supported", "timer, 100rel")],
        body=SDP,
        content_type="application/sdp",
    )


def sample_mix() -> list[bytes]:
    request = invite("z9hG4bK776asdhds", "a84b4c76e66710@198.51.100.23")
    ok = build_response(
        request,
        200,
        to_tag="a6c85cf",
        headers=[("Contact", "<sip:bob@203.0.113.10:5060>"), ("Record-Route", "<sip:203.0.113.1;lr>")],
        body=SDP,
        content_type="application/sdp",
    )
    return [serialize(request), serialize(register("z9hG4bKnashds7")), serialize(ok)]


def check_stack() -> None:
    """Refuse to time a stack that gets the samples or a call wrong."""
    for data in sample_mix():
        parse_message(data)
    pair = CallPair()
    pair.run_call(0)
    if pair.completed != 1 or pair.alice.active_transactions + pair.edge.active_transactions > 4:
        raise RuntimeError("the in-memory call did not complete")


class CallPair:
    """Alice calls the edge, which answers at once; Alice ACKs the 2xx and hangs up."""

    def __init__(self) -> None:
        self.alice = SipEndpoint(local_addresses={"udp": ("198.51.100.23", 5060)}, send_trying=True)
        self.edge = SipEndpoint(local_addresses={"udp": ("203.0.113.10", 5060)})
        self.now = 0.0
        self.completed = 0
        self.messages = 0

    def deliver(self) -> None:
        moved = True
        while moved:
            moved = False
            for sender, receiver, source in ((self.alice, self.edge, ALICE), (self.edge, self.alice, EDGE)):
                for data, _destination in sender.datagrams_to_send():
                    receiver.receive(data, source, self.now)
                    self.messages += 1
                    moved = True
            self.edge_tu()
            self.alice_tu()

    def edge_tu(self) -> None:
        while (event := self.edge.next_event()) is not None:
            if not isinstance(event, RequestReceived) or event.transaction is None:
                continue
            request = event.request
            if request.method == "INVITE":
                self.edge.respond(event.transaction, build_response(request, 180, to_tag="e1"), self.now)
                answer = build_response(request, 200, to_tag="e1", body=SDP, content_type="application/sdp")
                self.edge.respond(event.transaction, answer, self.now)
            else:
                self.edge.respond(event.transaction, build_response(request, 200), self.now)

    def alice_tu(self) -> None:
        while (event := self.alice.next_event()) is not None:
            if not isinstance(event, ResponseReceived):
                continue
            response = event.response
            if event.transaction.method == "INVITE" and response.code == 200:
                self.alice.send_stateless(self.in_dialog("ACK", response, 1), EDGE)
                self.alice.send_request(self.in_dialog("BYE", response, 2), EDGE, self.now)
            elif event.transaction.method == "BYE":
                self.completed += 1

    def in_dialog(self, method: str, response: Response, cseq: int) -> Request:
        return build_request(
            method,
            "sip:bob@203.0.113.10:5060",
            from_uri='"Alice" <sip:alice@example.com>',
            to_uri="<sip:bob@example.com>",
            via_host="198.51.100.23",
            via_port=5060,
            call_id=response.headers["Call-ID"],
            from_tag="alice-tag",
            to_tag=to_tag(response),
            cseq=cseq,
        )

    def run_call(self, number: int) -> None:
        self.alice.send_request(invite(f"z9hG4bKc{number}", f"call-{number}@bench"), EDGE, self.now)
        self.deliver()
        self.now += 0.001
        for endpoint in (self.alice, self.edge):
            deadline = endpoint.get_timer()
            if deadline is not None and deadline <= self.now:
                endpoint.handle_timer(self.now)
        self.deliver()


def measure(
    step: Callable[[int], int], duration: float, window: float, task: ProgressTask
) -> list[tuple[float, float]]:
    """Call ``step(i)`` (returns messages handled) for ``duration`` s; (elapsed, messages/s) per window."""
    points: list[tuple[float, float]] = []
    start = window_start = monotonic()
    handled = 0
    i = 0
    while True:
        for _ in range(20):
            handled += step(i)
            i += 1
        now = monotonic()
        if now - window_start >= window:
            points.append((now - start, handled / (now - window_start)))
            task.advance(now - window_start)
            window_start, handled = now, 0
            if now - start >= duration:
                return points


def parse_step() -> Callable[[int], int]:
    mix = sample_mix()

    def step(i: int) -> int:
        parse_message(mix[i % 3])
        return 1

    return step


def server_transaction_step() -> Callable[[int], int]:
    endpoint = SipEndpoint(local_addresses={"udp": ("203.0.113.10", 5060)})
    template = serialize(register("z9hG4bKBRANCH000000000"))
    clock = [0.0]

    def step(i: int) -> int:
        data = template.replace(b"z9hG4bKBRANCH000000000", f"z9hG4bK{i:015d}".encode())
        clock[0] += 0.001
        now = clock[0]
        endpoint.receive(data, ALICE, now)
        event = endpoint.next_event()
        if isinstance(event, RequestReceived) and event.transaction is not None:
            endpoint.respond(event.transaction, build_response(event.request, 200, to_tag="r1"), now)
        out = len(endpoint.datagrams_to_send())
        deadline = endpoint.get_timer()
        if deadline is not None and deadline <= now:
            endpoint.handle_timer(now)
        return 1 + out

    return step


def call_step() -> Callable[[int], int]:
    pair = CallPair()

    def step(i: int) -> int:
        before = pair.messages
        pair.run_call(i)
        return pair.messages - before

    return step


def transaction_memory(count: int) -> float:
    endpoint = SipEndpoint(local_addresses={"udp": ("203.0.113.10", 5060)}, max_transactions=count + 1)
    datagrams = [serialize(invite(f"z9hG4bKm{i}", f"mem-{i}@bench")) for i in range(count)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for data in datagrams:
        endpoint.receive(data, ALICE, 0.0)
        endpoint.next_event()
        endpoint.datagrams_to_send()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    if endpoint.active_transactions != count:
        raise RuntimeError("memory workload lost transactions")
    return grown / count


def run(ctx: SuiteContext) -> SuiteResult:
    duration = ctx.param("duration", 1.0 if ctx.quick else 8.0)
    window = ctx.param("window", 0.1 if ctx.quick else 0.25)
    memory_transactions = ctx.param("memory_transactions", 2_000 if ctx.quick else 10_000)
    if duration <= 0 or window <= 0 or window > duration or memory_transactions < 1:
        raise ValueError("need duration > 0, 0 < window <= duration, memory_transactions >= 1")
    check_stack()

    result = SuiteResult()
    workloads = {
        "parse": (parse_step(), "parse_rate"),
        "server transactions": (server_transaction_step(), "server_tx_messages_rate"),
        "calls": (call_step(), "call_messages_rate"),
    }
    for label, (step, figure) in workloads.items():
        task = ctx.task(label, total=duration)
        series = measure(step, duration, window, task)
        task.finish()
        result.series[label] = series
        result.units[label] = "messages/s"
        rates = [rate for _, rate in series]
        result.figures[figure] = statistics.median(rates)
        result.units[figure] = "messages/s"
        result.notes.append(
            f"{label}: window rates median {statistics.median(rates):,.0f}, min {min(rates):,.0f}, "
            f"max {max(rates):,.0f} messages/s"
        )
    result.figures["call_rate"] = result.figures["call_messages_rate"] / 7
    result.units["call_rate"] = "calls/s"

    task = ctx.task("memory per transaction", total=1)
    result.figures["bytes_per_invite_server_tx"] = transaction_memory(memory_transactions)
    result.units["bytes_per_invite_server_tx"] = "bytes"
    result.lower_is_better.add("bytes_per_invite_server_tx")
    task.advance()
    task.finish()

    result.targets["parse_rate"] = TARGET_PARSE_RATE
    result.targets["call_messages_rate"] = TARGET_STACK_MESSAGES_RATE
    result.notes.append("one thread, GC on, no sockets; call messages count both stacks' work")
    result.notes.append("target: 1,000 calls/s x 2 legs x 7 messages within half a core = 28,000 messages/s")
    ctx.log(
        f"parse {result.figures['parse_rate']:,.0f}/s, calls {result.figures['call_rate']:,.0f}/s, "
        f"{result.figures['bytes_per_invite_server_tx']:,.0f} B per INVITE server transaction"
    )
    return result


SUITE = Suite(
    name="sip-core",
    description="pure SIP stack: parse_message, server transactions and in-memory calls per second",
    run=run,
    params={
        "duration": "seconds per workload (default 8, quick 1)",
        "window": "seconds per plotted sample (default 0.25, quick 0.1)",
        "memory_transactions": "live INVITE server transactions for the memory figure (default 10000)",
    },
    packages=("sipmessage",),
)
