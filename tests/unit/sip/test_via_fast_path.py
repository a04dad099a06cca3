"""``parse_via``'s one-regex fast path against the general path it short-cuts.

For the plain Vias phones send (token transport, host name or IPv4, optional port, token parameters) the
fast path must answer on its own, with exactly what ``_parse_via_general`` and sipmessage's ``Via.parse``
give (same fields, same parameter order, which ``format_via`` writes back). Anything unusual (LWS, IPv6,
quoted or percent-escaped values, empty values, invalid host names) must go to the general path.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sipmessage import Parameters, Via

from signaling.sip import message
from signaling.sip.message import format_via, parse_via

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# RFC 3261 token characters minus '%' (sipmessage percent-decodes parameters: those take the general path).
_PLAIN_TOKEN = string.ascii_letters + string.digits + "-.!*_+`'~"
tokens = st.text(alphabet=_PLAIN_TOKEN, min_size=1, max_size=10)
_alnum = string.ascii_letters + string.digits
domain_labels = st.builds(
    lambda first, middle, last: first + middle + last if middle or last else first,
    st.sampled_from(_alnum),
    st.text(alphabet=_alnum + "-", max_size=6),
    st.text(alphabet=_alnum, max_size=1),
).filter(lambda label: not label.endswith("-"))
# sipmessage's toplabel (stricter than RFC 3261's): ALPHA+ ("-"+ alphanum+)*.
top_labels = st.builds(
    lambda letters, tail: letters + tail,
    st.text(alphabet=string.ascii_letters, min_size=1, max_size=6),
    st.one_of(st.just(""), st.text(alphabet=_alnum, min_size=1, max_size=4).map(lambda rest: "-" + rest)),
)
host_names = st.builds(
    lambda labels, top, dot: ".".join([*labels, top]) + dot,
    st.lists(domain_labels, max_size=3),
    top_labels,
    st.sampled_from(["", "."]),
)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda parts: ".".join(map(str, parts)))
ports = st.one_of(st.just(""), st.integers(0, 70000).map(lambda port: f":{port}"))
plain_params = st.lists(
    st.tuples(tokens, st.one_of(st.none(), tokens)), max_size=5, unique_by=lambda pair: pair[0]
).map(lambda pairs: "".join(f";{name}" if value is None else f";{name}={value}" for name, value in pairs))
plain_vias = st.builds(
    lambda transport, host, port, params: f"SIP/2.0/{transport} {host}{port}{params}",
    st.one_of(st.sampled_from(["UDP", "TCP", "TLS", "WS", "WSS", "udp"]), tokens),
    st.one_of(host_names, ipv4),
    ports,
    plain_params,
)

# One oddity the fast path must not take, spliced into a plain Via.
_ODD_EDITS: list[Callable[[str], str]] = [
    lambda via: via.replace(" ", "  ", 1),  # LWS after the protocol
    lambda via: via.replace("SIP/2.0/", "SIP / 2.0 / ", 1),
    lambda via: via + " ;x=1",  # LWS before a parameter
    lambda via: via + "; x=1",
    lambda via: via + ";x = 1",
    lambda via: via + ';x="quoted value"',
    lambda via: via + ";x=%41",
    lambda via: via + ";%78=1",
    lambda via: via + ";x=",
    lambda via: via + ";",
    lambda via: via + " ",
    lambda via: via + "\t",
    lambda via: via + ";maddr=[2001:db8::1]",
    lambda via: "SIP/2.0/UDP [2001:db8::1]:5060" + via[via.find(";") :] if ";" in via else via + "[",
    lambda via: via.replace("SIP/2.0/", "sip/2.0/", 1),
]
odd_vias = st.builds(lambda via, edit: edit(via), plain_vias, st.sampled_from(_ODD_EDITS))
invalid_hosts = st.builds(
    lambda host, params: f"SIP/2.0/UDP {host}:5060{params}",
    st.sampled_from(["a..b", "-bad", "bad-", "1abc", "example.-com", "a.1b"]),
    plain_params,
)


def _fields(via: Via) -> tuple[str, str, int | None, list[tuple[str, str | None]]]:
    return via.transport, via.host, via.port, list(via.parameters.items())


def _general_or_none(value: str) -> Via | None:
    try:
        return message._parse_via_general(value)
    except ValueError:
        return None


def _parse_or_none(value: str) -> Via | None:
    try:
        return parse_via(value)
    except ValueError:
        return None


@FAST
@given(plain_vias)
def test_plain_vias_take_the_fast_path_with_the_general_result(value: str) -> None:
    general = message._parse_via_general(value)
    with mock.patch.object(message, "_parse_via_general", side_effect=AssertionError("fell back")):
        fast = parse_via(value)
    assert _fields(fast) == _fields(general) == _fields(Via.parse(value))
    # A real sipmessage Via, equal to one built through the public constructors.
    assert type(fast) is Via and type(fast.parameters) is Parameters
    assert fast == Via(general.transport, general.host, general.port, Parameters(**dict(general.parameters)))
    assert format_via(fast) == value


@FAST
@given(st.one_of(odd_vias, invalid_hosts))
def test_unusual_vias_fall_back_to_the_general_path(value: str) -> None:
    expected = _general_or_none(value)
    with mock.patch.object(message, "_parse_via_general", wraps=message._parse_via_general) as general:
        got = _parse_or_none(value)
    assert general.call_count == 1, f"fast path took {value!r}"
    if expected is None:
        assert got is None
    else:
        assert got is not None and _fields(got) == _fields(expected)


@pytest.mark.parametrize(
    "value",
    [
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport",
        "SIP/2.0/TCP client.example.com;branch=z9hG4bK1;received=192.0.2.9;rport=5062",
        "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKasudf;ttl=1",
        "SIP/2.0/UDP example.com.:99999;x",
    ],
)
def test_common_vias_agree_with_sipmessage(value: str) -> None:
    assert _fields(parse_via(value)) == _fields(Via.parse(value))


def test_host_validity_cache_is_bounded() -> None:
    saved = dict(message._VALID_HOSTS)
    try:
        message._VALID_HOSTS.clear()
        for index in range(message._VALID_HOSTS_LIMIT + 50):
            parse_via(f"SIP/2.0/UDP h{index}.example.com:5060;branch=z9hG4bK{index}")
        assert len(message._VALID_HOSTS) == message._VALID_HOSTS_LIMIT
        # Hosts beyond the bound are still checked, just not remembered.
        with pytest.raises(ValueError):
            parse_via("SIP/2.0/UDP a..b:5060;branch=z9hG4bK1")
    finally:
        message._VALID_HOSTS.clear()
        message._VALID_HOSTS.update(saved)
