"""Which source addresses a static trunk accepts calls from (parsed once, looked up per INVITE)."""

from __future__ import annotations

import dataclasses

import pytest

from signaling.callcontrol.config import CallControlConfig, Trunk


@pytest.mark.parametrize(
    ("sources", "host", "accepted"),
    [
        (("192.0.2.10",), "192.0.2.10", True),
        (("192.0.2.10",), "192.0.2.11", False),
        (("192.0.2.10/32",), "192.0.2.10", True),
        (("192.0.2.0/24",), "192.0.2.200", True),
        (("192.0.2.0/24",), "192.0.3.1", False),
        (("2001:db8::1",), "2001:db8::1", True),
        (("2001:db8::1",), "[2001:db8::1]", True),
        (("2001:db8::1",), "2001:0db8:0:0:0:0:0:1", True),
        (("2001:db8::/32",), "2001:db8:ffff::5", True),
        (("192.0.2.10",), "trunk.example.com", False),
        (("192.0.2.10",), "", False),
        ((), "192.0.2.10", False),
    ],
)
def test_accepts_from(sources: tuple[str, ...], host: str, accepted: bool) -> None:
    trunk = Trunk(name="carrier", host="192.0.2.10", inbound_sources=sources)
    assert trunk.accepts_from(host) is accepted


def test_the_parsed_sources_follow_a_replaced_trunk_and_do_not_affect_equality() -> None:
    trunk = Trunk(name="carrier", host="192.0.2.10", inbound_sources=("192.0.2.10",))
    moved = dataclasses.replace(trunk, inbound_sources=("198.51.100.0/24",))
    assert moved.accepts_from("198.51.100.9") and not moved.accepts_from("192.0.2.10")
    assert trunk == Trunk(name="carrier", host="192.0.2.10", inbound_sources=("192.0.2.10",))
    assert hash(trunk) == hash(Trunk(name="carrier", host="192.0.2.10", inbound_sources=("192.0.2.10",)))


def test_the_first_trunk_that_accepts_the_source_wins() -> None:
    first = Trunk(name="a", host="192.0.2.1", inbound_sources=("192.0.2.0/24",))
    second = Trunk(name="b", host="192.0.2.2", inbound_sources=("192.0.2.2",))
    config = CallControlConfig(trunks=(first, second))
    assert config.trunk_for_source("192.0.2.2") is first
    assert config.trunk_for_source("198.51.100.1") is None
