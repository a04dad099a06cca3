"""sip-parse: how many realistic SIP messages per second sipmessage parses on this machine.

Two workloads over the same mix (an INVITE with an SDP offer, a REGISTER carrying digest credentials, a
200 OK with an SDP answer):

* ``parse only`` — ``Message.parse``: start line and raw header split (typed headers parse lazily);
* ``parse + headers`` — also reads the typed headers a proxy/registrar needs on every message (Via,
  From, To, Call-ID, CSeq, Contact, Max-Forwards, Content-Type, Authorization, Expires, Record-Route).

Throughput is sampled per time window (the plotted series); per-message costs are medians of repeats.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from sipmessage import Message, Request, Response

from bench.framework import ProgressTask, Suite, SuiteContext, SuiteResult, monotonic

# A node at 1,000 calls/s handles ~7 messages per call (INVITE, 100, 180, 200, ACK, BYE, 200);
# parsing should take at most a third of one core, so ≥ 21,000 messages/s with typed headers.
TARGET_PARSE_HEADERS_RATE = 21_000.0
CYCLES_PER_BATCH = 20  # ~1 ms of work between clock reads: timing overhead stays negligible


def _sip(start_line: str, headers: list[str], body: str = "") -> bytes:
    """Assemble a message with a correct Content-Length (CRLF line ends, as on the wire)."""
    encoded_body = body.replace("\n", "\r\n").encode()
    lines = [start_line, *headers, f"Content-Length: {len(encoded_body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + encoded_body


SDP_OFFER = """v=0
o=alice 2890844526 2890844526 IN IP4 198.51.100.23
s=-
c=IN IP4 198.51.100.23
t=0 0
m=audio 49170 RTP/AVP 111 0 8 101
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
a=rtcp-mux
"""

SDP_ANSWER = """v=0
o=uc-edge 3960472101 3960472101 IN IP4 203.0.113.10
s=uc-edge
c=IN IP4 203.0.113.10
t=0 0
m=audio 40002 RTP/AVP 111 101
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
a=rtcp-mux
"""

CALL_ID = "a84b4c76e66710-3f9d@198.51.100.23"

INVITE_WITH_SDP = _sip(
    "INVITE sip:bob@example.com SIP/2.0",
    [
        "Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK776asdhds;rport",
        "Max-Forwards: 70",
        'From: "Alice" <sip:alice@example.com>;tag=1928301774',
        "To: <sip:bob@example.com>",
        f"Call-ID: {CALL_ID}",
        "CSeq: 314159 INVITE",
        'Contact: <sip:alice@198.51.100.23:5060;transport=udp>;+sip.instance="<urn:uuid:6f2b9c1e>"',
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY, MESSAGE",
        "Supported: replaces, timer, 100rel",
        "Session-Expires: 1800",
        "User-Agent: baresip v1.0.0 (x86_64/linux)",
        "Content-Type: application/sdp",
    ],
    SDP_OFFER,
)

REGISTER_WITH_AUTH = _sip(
    "REGISTER sip:example.com SIP/2.0",
    [
        "Via: SIP/2.0/TCP 198.51.100.23:50344;branch=z9hG4bKnashds7;rport;alias",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=a73kszlfl",
        "To: <sip:alice@example.com>",
        "Call-ID: 1j9FpLxk3uxtm8tn@198.51.100.23",
        "CSeq: 2 REGISTER",
        "Contact: <sip:alice@198.51.100.23:50344;transport=tcp>;expires=600;"
        '+sip.instance="<urn:uuid:6f2b9c1e>"',
        'Authorization: Digest username="alice", realm="example.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:example.com", '
        'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, cnonce="0a4f113b", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41", qop=auth, nc=00000001',
        "Expires: 600",
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY, MESSAGE",
        "User-Agent: baresip v1.0.0 (x86_64/linux)",
    ],
)

OK_WITH_SDP = _sip(
    "SIP/2.0 200 OK",
    [
        "Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK4b43c2ff8.1;received=203.0.113.1",
        "Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK776asdhds;rport=5060;received=198.51.100.23",
        "Record-Route: <sip:203.0.113.1;lr>",
        'From: "Alice" <sip:alice@example.com>;tag=1928301774',
        "To: <sip:bob@example.com>;tag=a6c85cf",
        f"Call-ID: {CALL_ID}",
        "CSeq: 314159 INVITE",
        "Contact: <sip:bob@203.0.113.10:5060;transport=udp>",
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE",
        "Supported: timer",
        "Session-Expires: 1800;refresher=uac",
        "Server: uc-edge",
        "Content-Type: application/sdp",
    ],
    SDP_ANSWER,
)

SAMPLES: dict[str, bytes] = {
    "invite": INVITE_WITH_SDP,
    "register": REGISTER_WITH_AUTH,
    "ok200": OK_WITH_SDP,
}


def parse_only(data: bytes) -> Request | Response:
    return Message.parse(data)


def parse_with_headers(data: bytes) -> Request | Response:
    message = Message.parse(data)
    # Read what a proxy or registrar reads on every message; each access parses that header.
    message.via  # noqa: B018
    message.from_address  # noqa: B018
    message.to_address  # noqa: B018
    message.call_id  # noqa: B018
    message.cseq  # noqa: B018
    message.contact  # noqa: B018
    message.max_forwards  # noqa: B018
    message.content_type  # noqa: B018
    message.record_route  # noqa: B018
    message.authorization  # noqa: B018
    message.expires  # noqa: B018
    return message


def check_samples() -> None:
    """Refuse to time a parser that gets these messages wrong: the figures would mean nothing."""
    invite = parse_with_headers(INVITE_WITH_SDP)
    register = parse_with_headers(REGISTER_WITH_AUTH)
    ok = parse_with_headers(OK_WITH_SDP)
    problems = []
    if not (isinstance(invite, Request) and invite.method == "INVITE" and invite.call_id == CALL_ID):
        problems.append("INVITE start line or Call-ID")
    if invite.cseq.sequence != 314159 or len(invite.body) != invite.content_length:
        problems.append("INVITE CSeq or body length")
    credentials = register.authorization
    username = credentials.parameters.get("username") if credentials and credentials.parameters else None
    if username != "alice" or register.expires != 600:
        problems.append("REGISTER Authorization or Expires")
    if not (
        isinstance(ok, Response)
        and ok.code == 200
        and len(ok.via) == 2
        and ok.to_address.parameters.get("tag") == "a6c85cf"
    ):
        problems.append("200 OK status, Via list or To tag")
    if problems:
        raise RuntimeError(f"sipmessage parsed the samples wrongly: {', '.join(problems)}")


def measure_rate(
    parse: Callable[[bytes], object], duration: float, window: float, task: ProgressTask
) -> list[tuple[float, float]]:
    """Parse the sample mix for ``duration`` s; one (elapsed s, messages/s) point per ``window``."""
    mix = list(SAMPLES.values())
    per_batch = CYCLES_PER_BATCH * len(mix)
    points: list[tuple[float, float]] = []
    start = window_start = monotonic()
    parsed = 0
    while True:
        for _ in range(CYCLES_PER_BATCH):
            for data in mix:
                parse(data)
        parsed += per_batch
        now = monotonic()
        if now - window_start >= window:
            points.append((now - start, parsed / (now - window_start)))
            task.advance(now - window_start)
            window_start, parsed = now, 0
            if now - start >= duration:
                return points


def measure_cost_us(parse: Callable[[bytes], object], data: bytes, loops: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean cost of one parse, in µs."""
    costs = []
    for _ in range(repeats):
        began = monotonic()
        for _ in range(loops):
            parse(data)
        costs.append((monotonic() - began) / loops * 1e6)
    return statistics.median(costs)


def run(ctx: SuiteContext) -> SuiteResult:
    duration = ctx.param("duration", 1.0 if ctx.quick else 10.0)
    window = ctx.param("window", 0.1 if ctx.quick else 0.25)
    loops = ctx.param("loops", 300 if ctx.quick else 3000)
    repeats = ctx.param("repeats", 3 if ctx.quick else 7)
    if duration <= 0 or window <= 0 or window > duration or loops < 1 or repeats < 1:
        raise ValueError("need duration > 0, 0 < window <= duration, loops >= 1, repeats >= 1")

    check_samples()
    result = SuiteResult(lower_is_better=set())
    workloads = {"parse only": parse_only, "parse + headers": parse_with_headers}
    for label, parse in workloads.items():
        task = ctx.task(f"{label} (mixed INVITE/REGISTER/200)", total=duration)
        result.series[label] = measure_rate(parse, duration, window, task)
        task.finish()
        result.units[label] = "messages/s"

    for figure, label in (("parse_rate", "parse only"), ("parse_headers_rate", "parse + headers")):
        rates = [rate for _, rate in result.series[label]]
        result.figures[figure] = statistics.median(rates)
        result.units[figure] = "messages/s"
        result.notes.append(
            f"{label}: window rates median {statistics.median(rates):,.0f}, "
            f"min {min(rates):,.0f}, max {max(rates):,.0f} messages/s over {len(rates)} windows"
        )

    costs = ctx.task("per-message cost", total=len(SAMPLES) * len(workloads))
    for name, data in SAMPLES.items():
        for suffix, parse in (("parse_us", parse_only), ("headers_us", parse_with_headers)):
            figure = f"{name}_{suffix}"
            result.figures[figure] = measure_cost_us(parse, data, loops, repeats)
            result.units[figure] = "µs"
            result.lower_is_better.add(figure)
            costs.advance()

    result.targets["parse_headers_rate"] = TARGET_PARSE_HEADERS_RATE
    result.ratios["parse+headers / parse-only throughput"] = (
        result.figures["parse_headers_rate"] / result.figures["parse_rate"]
    )
    sizes = ", ".join(f"{name} {len(data)} B" for name, data in SAMPLES.items())
    result.notes.append(f"one thread, GC on; message sizes: {sizes}")
    result.notes.append(
        "target: 1,000 calls/s x ~7 messages per call within a third of one core = 21,000 messages/s"
    )
    ctx.log(f"parse + headers: {result.figures['parse_headers_rate']:,.0f} messages/s")
    return result


SUITE = Suite(
    name="sip-parse",
    description="sipmessage parsing throughput on realistic INVITE+SDP, REGISTER+digest, 200 OK+SDP",
    run=run,
    params={
        "duration": "seconds per workload (default 10, quick 1)",
        "window": "seconds per plotted sample (default 0.25, quick 0.1)",
        "loops": "parses per per-message cost repeat (default 3000, quick 300)",
        "repeats": "repeats per per-message cost; the median is kept (default 7, quick 3)",
    },
    packages=("sipmessage",),
)
