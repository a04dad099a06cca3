"""Property tests: no input makes the parser, framer or endpoint raise or leak state."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.sip.endpoint import SipEndpoint
from signaling.sip.framing import FramingError, StreamFramer
from signaling.sip.message import MessageParseError, ParseLimits, Request, Response, parse_message, serialize
from signaling.sip.routing import TransportAddress
from tests.unit.sip.support import make_request
from tests.unit.sip.torture import expectations, load_message

CORPUS = [load_message(name) for name in sorted(expectations())] + [
    serialize(make_request("INVITE")),
    serialize(make_request("REGISTER")),
]
SOURCE = TransportAddress("udp", "192.0.2.77", 5099)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A corpus message with a few byte-level edits: flips, cuts, inserts, duplications."""
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate"]))
        if action == "flip":
            data[position] = draw(st.integers(0, 255))
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        elif action == "insert":
            data[position:position] = draw(
                st.sampled_from([b"\r\n", b" ", b";", b",", b":", b"\x00", b"\r\n "])
            )
        elif action == "truncate":
            del data[position:]
        else:
            end = min(len(data), position + draw(st.integers(1, 40)))
            data[position:position] = data[position:end]
    return bytes(data)


inputs = st.one_of(st.binary(max_size=512), mutated())


@FAST
@given(inputs)
def test_parser_only_ever_raises_message_parse_error(data: bytes) -> None:
    try:
        message = parse_message(data)
    except MessageParseError as error:
        reply = error.build_reply()
        assert reply is None or 400 <= reply.code < 600
        return
    assert isinstance(message, Request | Response)


@FAST
@given(st.lists(inputs, min_size=1, max_size=8))
def test_endpoint_receive_never_raises_and_never_leaks(datagrams: list[bytes]) -> None:
    endpoint = SipEndpoint(local_addresses={"udp": ("192.0.2.1", 5060)}, max_transactions=4)
    now = 0.0
    for data in datagrams:
        endpoint.receive(data, SOURCE, now)
        assert endpoint.active_transactions <= 4
        while endpoint.next_event() is not None:
            pass
        endpoint.datagrams_to_send()
        now += 0.1
    # Nobody answers anything: every transaction must still end on its own.
    while (deadline := endpoint.get_timer()) is not None:
        endpoint.handle_timer(deadline)
        endpoint.datagrams_to_send()
        assert deadline < 10_000
    assert endpoint.active_transactions == 0
    assert endpoint.stats.transactions_created == endpoint.stats.transactions_terminated


@FAST
@given(st.lists(st.sampled_from([*CORPUS[-2:], b"\r\n\r\n", b"\r\n"]), min_size=1, max_size=6), st.data())
def test_framer_gives_same_messages_whole_or_byte_by_byte(parts: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(parts)
    whole = StreamFramer()
    expected = whole.feed(stream)
    pieces = StreamFramer()
    got: list[bytes] = []
    position = 0
    while position < len(stream):
        step = data.draw(st.integers(1, 64))
        got += pieces.feed(stream[position : position + step])
        position += step
    assert got == expected
    assert len(expected) == sum(
        1 for part in parts if part.startswith(b"INVITE") or part.startswith(b"REGISTER")
    )
    # a trailing lone CRLF may be the start of a ping: both framers keep it
    assert pieces.buffered == whole.buffered <= 3 and pieces.pings == whole.pings


@FAST
@given(st.binary(max_size=2048))
def test_framer_only_ever_raises_framing_error_and_stays_bounded(data: bytes) -> None:
    framer = StreamFramer(max_message_size=1024)
    try:
        for start in range(0, len(data), 97):
            framer.feed(data[start : start + 97])
            assert framer.buffered <= 1024 + 97
    except FramingError:
        pass


def test_header_bomb_is_refused_before_parsing() -> None:
    limits = ParseLimits(max_headers=50, max_header_length=1000)
    bomb = serialize(make_request("OPTIONS")).replace(b"\r\n\r\n", b"\r\n" + b"X-A: b\r\n" * 60 + b"\r\n")
    try:
        parse_message(bomb, limits)
    except MessageParseError as error:
        assert error.status_code is None and "header lines" in error.reason
    else:
        raise AssertionError("header bomb accepted")
    long_via = serialize(make_request("OPTIONS")).replace(b";rport", b";rport;x=" + b"a" * 2000)
    try:
        parse_message(long_via, limits)
    except MessageParseError as error:
        assert "longer than 1000" in error.reason
    else:
        raise AssertionError("long header accepted")
    oversized = b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X: " + b"a" * 70_000 + b"\r\n\r\n"
    endpoint = SipEndpoint()
    endpoint.receive(oversized, SOURCE, 0.0)
    assert endpoint.datagrams_to_send() == [] and endpoint.stats.parse_errors == 1


via_text = st.builds(
    lambda transport, host, port, params: f"SIP/2.0/{transport} {host}{port}{params}",
    st.sampled_from(["UDP", "TCP", "TLS", "WS", "udp", "X!Y", ""]),
    st.sampled_from(["192.0.2.1", "host.example.com", "a..b", "-bad", "[::1]", "h_1", "example.com."]),
    st.sampled_from(["", ":5060", ":0", ":99999", ":x", ":"]),
    st.lists(
        st.sampled_from(
            [
                ";branch=z9hG4bK1",
                ";rport",
                ";rport=5",
                ";received=192.0.2.9",
                ";",
                ";=x",
                ";k=",
                ";k=%41",
                ";%6Br=v",
                ";k=a:b",
                ";k=v w",
                ';k="q"',
                ";maddr=[::1]",
                ";ttl=1",
            ]
        ),
        max_size=4,
    ).map("".join),
)


@FAST
@given(via_text)
def test_fast_via_parser_agrees_with_sipmessage(value: str) -> None:
    from sipmessage import Via

    from signaling.sip.message import parse_via

    try:
        expected: Via | None = Via.parse(value)
    except ValueError:
        expected = None
    try:
        got: Via | None = parse_via(value)
    except ValueError:
        got = None
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert (got.transport, got.host, got.port, dict(got.parameters)) == (
            expected.transport,
            expected.host,
            expected.port,
            dict(expected.parameters),
        )
