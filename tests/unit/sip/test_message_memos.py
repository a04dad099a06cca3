"""The per-message memos and direct object builders of ``signaling.sip.message`` against the plain code.

``cseq_of``, ``from_tag``, ``to_tag`` and ``top_via`` remember what they derived from a header next to the
header text: whatever is done to the headers afterwards (set, setlist, add, remove, an in-place edit of a
value list, a new headers object), every read must equal what the uncached expression gives now. Parsing
builds ``Via``/``CSeq``/``Request``/``Response`` objects straight into their instance dicts: the result
must be indistinguishable from the constructors', and a sipmessage that stores them differently must make
the module fall back to the constructors. Serialising sipmessage's own ``Headers`` must write the bytes
sipmessage writes.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sipmessage import CSeq, Headers

from signaling.sip import message
from signaling.sip.message import (
    IndexedHeaders,
    MessageParseError,
    Request,
    Response,
    address_tag,
    build_request,
    build_response,
    cseq_of,
    from_tag,
    parse_cseq,
    parse_message,
    parse_with_keys,
    serialize,
    to_tag,
    top_via,
    top_via_of_headers,
)
from tests.unit.sip.torture import DATA_DIR, load_message

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=1928301774\r\n'
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: a84b4c76e66710-3f9d@198.51.100.23\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@198.51.100.23:5060>\r\n"
    b"Content-Length: 0\r\n\r\n"
)
RINGING = (
    b"SIP/2.0 180 Ringing\r\n"
    b"v: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKabc, SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKdef\r\n"
    b"f: <sip:alice@example.com>;TAG=Upper\r\n"
    b"t: sip:bob@example.com ; tag = spaced\r\n"
    b"i: 1@x\r\n"
    b"CSeq:   7    INVITE\r\n"
    b"l: 0\r\n\r\n"
)


def _invite() -> Request:
    request = parse_message(INVITE)
    assert isinstance(request, Request)
    return request


# --------------------------------------------------------------------------- memos under mutation

HEADER_VALUES: dict[str, list[str]] = {
    "CSeq": ["1 INVITE", "2 BYE", "  3   ACK ", "4294967296 INVITE", "not a cseq", "5 INVITE"],
    "From": ['"A" <sip:a@x>;tag=one', "<sip:a@x>", "sip:a@x;tag=two", "<sip:a@x;tag=uri>;tag=hdr", ""],
    "To": ["<sip:b@y>", "<sip:b@y>;tag=three", "sip:b@y ; TAG = four", "<sip:b@y>;tag=x;tag=y"],
    "Via": [
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport",
        "SIP/2.0/TCP host.example;branch=z9hG4bK2, SIP/2.0/UDP 192.0.2.9",
        "SIP / 2.0 / UDP 192.0.2.3 ;branch=z9hG4bK3",
        "not a via",
        "",
    ],
}
NAME_SPELLINGS = {
    "CSeq": ["CSeq", "cseq", "CSEQ"],
    "From": ["From", "from"],
    "To": ["To", "TO"],
    "Via": ["Via", "via"],
}

Outcome = tuple[str, object]


def _outcome(read: Callable[[], object]) -> Outcome:
    try:
        return ("value", read())
    except (KeyError, ValueError) as error:
        return ("error", type(error))


def _uncached_reads(msg: Request | Response) -> list[Outcome]:
    """What the accessors are defined to return, computed from the headers as they are now."""
    headers = msg.headers

    def tag(name: str) -> str | None:
        value = headers.get(name)
        return address_tag(value) if value is not None else None

    return [
        _outcome(lambda: parse_cseq(headers["CSeq"])),
        _outcome(lambda: tag("From")),
        _outcome(lambda: tag("To")),
        _outcome(lambda: top_via_of_headers(headers)),
    ]


def _memo_reads(msg: Request | Response) -> list[Outcome]:
    return [
        _outcome(lambda: cseq_of(msg)),
        _outcome(lambda: from_tag(msg)),
        _outcome(lambda: to_tag(msg)),
        _outcome(lambda: top_via(msg)),
    ]


def _mutation(kind: str, name: str, spelling: str, value: str) -> Callable[[Request | Response], None]:
    def apply(msg: Request | Response) -> None:
        headers = msg.headers
        if kind == "set":
            headers.set(spelling, value)
        elif kind == "setlist":
            headers.setlist(spelling, [value, value])
        elif kind == "add":
            headers.add(spelling, value)
        elif kind == "remove":
            headers.remove(spelling)
        elif kind == "edit in place":
            values = headers.getlist(spelling)
            if values:
                values[0] = value
        elif kind == "new headers":
            msg.headers = parse_message(RINGING if isinstance(msg, Request) else INVITE).headers
        elif kind == "plain headers":
            plain = Headers()
            for written, values in headers._list:
                for each in values:
                    plain.add(written, each)
            msg.headers = plain

    return apply


mutations = st.builds(
    lambda kind, name, spelling_index, value_index: _mutation(
        kind,
        name,
        NAME_SPELLINGS[name][spelling_index % len(NAME_SPELLINGS[name])],
        HEADER_VALUES[name][value_index % len(HEADER_VALUES[name])],
    ),
    st.sampled_from(["set", "setlist", "add", "remove", "edit in place", "new headers", "plain headers"]),
    st.sampled_from(sorted(HEADER_VALUES)),
    st.integers(0, 5),
    st.integers(0, 5),
)
built_messages: list[Callable[[], Request | Response]] = [
    lambda: parse_message(INVITE),
    lambda: parse_message(RINGING),
    lambda: build_response(_invite(), 200, to_tag="t200"),
    lambda: build_request(
        "BYE", "sip:b@y", from_uri="<sip:a@x>", to_uri="<sip:b@y>", via_host="h", via_port=5060
    ),
]


@FAST
@given(st.sampled_from(built_messages), st.lists(st.tuples(mutations, st.booleans()), max_size=8))
def test_memoised_reads_follow_every_header_change(
    make: Callable[[], Request | Response], steps: list[tuple[Callable[[Request | Response], None], bool]]
) -> None:
    msg = make()
    assert _memo_reads(msg) == _uncached_reads(msg)
    for mutate, read_before in steps:
        if read_before:  # a memo filled just before the change must not survive it
            _memo_reads(msg)
        mutate(msg)
        assert _memo_reads(msg) == _uncached_reads(msg)
        assert _memo_reads(msg) == _uncached_reads(msg)  # and again, now from the memo


def test_parsing_seeds_the_cseq_and_top_via_memos() -> None:
    parsed = parse_with_keys(INVITE)
    assert cseq_of(parsed.message) is parsed.cseq
    assert top_via(parsed.message) is parsed.top_via
    parsed.message.headers.set("CSeq", "314160 INVITE")
    assert cseq_of(parsed.message) == CSeq(314160, "INVITE")


def test_repeated_reads_parse_once() -> None:
    msg = parse_message(RINGING)
    first = (from_tag(msg), to_tag(msg), cseq_of(msg), top_via(msg))
    assert first[:2] == ("Upper", "spaced")
    for _ in range(3):
        again = (from_tag(msg), to_tag(msg), cseq_of(msg), top_via(msg))
        assert again == first
        assert again[2] is first[2] and again[3] is first[3]


def test_a_broken_cseq_keeps_raising() -> None:
    msg = parse_message(INVITE)
    msg.headers.set("CSeq", "x INVITE")
    for _ in range(2):
        with pytest.raises(ValueError):
            cseq_of(msg)
    msg.headers.remove("CSeq")
    with pytest.raises(KeyError):
        cseq_of(msg)


def test_to_tag_read_by_build_response_sees_a_changed_to() -> None:
    request = _invite()
    assert to_tag(request) is None
    request.headers.set("To", "<sip:bob@example.com>;tag=already")
    response = build_response(request, 180, to_tag="fresh")
    assert response.headers["To"] == "<sip:bob@example.com>;tag=already"


# --------------------------------------------------------------------------- direct builders


def test_direct_builders_are_in_use_with_this_sipmessage() -> None:
    assert message._direct_builders_match()
    assert message._new_via is message._via_direct


def test_a_sipmessage_storing_objects_differently_falls_back_to_constructors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(message, "_PARAMETERS_DATA", "_Parameters__renamed")
    assert not message._direct_builders_match()


def _torture_messages() -> list[bytes]:
    return [load_message(path.stem) for path in sorted(DATA_DIR.glob("*.txt"))]


def _parse_outcome(data: bytes) -> object:
    try:
        parsed = parse_with_keys(data)
    except MessageParseError as error:
        return ("error", str(error), error.status_code)
    msg = parsed.message
    state = {name: value for name, value in vars(msg).items() if name != "headers"}
    return (type(msg), state, msg.headers._list, parsed.top_via, parsed.cseq)


@pytest.mark.parametrize("data", [INVITE, RINGING, *_torture_messages()])
def test_direct_builders_parse_what_the_constructors_parse(
    data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = _parse_outcome(data)
    monkeypatch.setattr(message, "_new_via", message._via_by_constructor)
    monkeypatch.setattr(message, "_new_cseq", CSeq)
    monkeypatch.setattr(message, "_new_request", message._request_by_constructor)
    monkeypatch.setattr(message, "_new_response", message._response_by_constructor)
    constructed = _parse_outcome(data)
    assert direct == constructed
    if isinstance(direct, tuple) and direct[0] != "error":
        assert isinstance(constructed, tuple)
        for built, reference in zip(direct[3:], constructed[3:], strict=True):  # the top Via and the CSeq
            assert message._same_state(built, reference)


def test_torture_corpus_is_present() -> None:
    assert len(_torture_messages()) > 10, Path(DATA_DIR)


# --------------------------------------------------------------------------- digits without a regex


@FAST
@given(st.text(alphabet=string.digits + " -+a\u00b2\u0660\u0661\u0663", max_size=6))
def test_is_digits_agrees_with_the_regex(text: str) -> None:
    assert message._is_digits(text) == (message._DIGITS_RE.fullmatch(text) is not None)


# --------------------------------------------------------------------------- serialising sipmessage's Headers

header_names = st.sampled_from(
    ["Via", "From", "To", "CSeq", "content-length", "Content-Length", "X-A", "Route"]
)
header_values = st.text(alphabet=string.ascii_letters + string.digits + " ;=<>:@.", max_size=12)


@FAST
@given(
    st.lists(st.tuples(header_names, header_values), max_size=8),
    st.binary(max_size=10),
    st.booleans(),
)
def test_serialize_writes_what_sipmessage_writes_for_its_own_headers(
    fields: list[tuple[str, str]], body: bytes, is_request: bool
) -> None:
    def build() -> Request | Response:
        msg: Request | Response
        msg = (
            Request("OPTIONS", message.parse_uri("sip:b@y"), body)
            if is_request
            else Response(200, "OK", body)
        )
        for name, value in fields:
            msg.headers.add(name, value)
        return msg

    fast, reference = build(), build()
    assert type(fast.headers) is Headers
    reference.headers.set("Content-Length", str(len(body)))
    assert serialize(fast) == bytes(reference)
    assert fast.headers._list == reference.headers._list


def test_serialize_leaves_a_message_subclass_to_its_own_bytes() -> None:
    class Loud(Response):
        def __bytes__(self) -> bytes:
            return b"LOUD " + super().__bytes__()

    loud = Loud(200, "OK")
    loud.headers.add("Call-ID", "1")
    assert serialize(loud).startswith(b"LOUD SIP/2.0 200 OK\r\nCall-ID: 1\r\nContent-Length: 0\r\n")


def test_indexed_headers_are_what_parsed_and_built_messages_carry() -> None:
    assert type(parse_message(INVITE).headers) is IndexedHeaders
    assert type(build_response(_invite(), 180).headers) is IndexedHeaders
