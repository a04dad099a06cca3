"""Trunks named by DNS name: routing sends to the resolved address (URIs keep the name), 503 while
unresolved, and a registering trunk accepts calls from the addresses its name resolves to."""

from __future__ import annotations

import pytest

from signaling.callcontrol.actions import RouteQuery, RouteReject, RouteToContacts
from signaling.callcontrol.config import CallControlConfig, Trunk, TrunkAddresses, parse_trunks
from signaling.callcontrol.router import CallRouter
from signaling.sip.routing import TransportAddress
from storage.memory.hot import MemoryLocationStore

NAMED = Trunk(name="carrier", host="sip.carrier.test", port=5080, prefixes=("00",))
REGISTERING = Trunk(
    name="registrar", host="reg.carrier.test", register=True, username="edge", password="pw", prefixes=("9",)
)


def router_for(*trunks: Trunk) -> tuple[CallRouter, TrunkAddresses]:
    config = CallControlConfig(trunks=trunks)
    return CallRouter(config, location=MemoryLocationStore()), config.trunk_addresses


def route(router: CallRouter, user: str) -> object:
    return router.resolve_static(RouteQuery(user, "uc-edge.local", None, None))


def test_an_unresolved_trunk_name_is_refused_with_503() -> None:
    router, _addresses = router_for(NAMED)
    found = route(router, "0049301234")
    assert isinstance(found, RouteReject)
    assert found.status == 503 and found.result == "failed"
    assert "carrier" in found.reason and "sip.carrier.test" in found.reason and "not resolved" in found.reason


def test_a_resolved_trunk_name_is_the_uri_host_and_its_address_the_destination() -> None:
    router, addresses = router_for(NAMED)
    addresses.set("carrier", ["203.0.113.5", "2001:db8::5"])
    found = route(router, "0049301234")
    assert isinstance(found, RouteToContacts)
    (contact,) = found.contacts
    assert contact.uri == "sip:0049301234@sip.carrier.test:5080"
    assert found.target == contact.uri and found.to_uri == "<sip:0049301234@sip.carrier.test>"
    assert contact.flow == TransportAddress("udp", "203.0.113.5", 5080)
    # the other addresses are tried one after the other if the first fails (RFC 3263 §4.3)
    assert contact.failover == (TransportAddress("udp", "2001:db8::5", 5080),)
    addresses.set("carrier", ["203.0.113.6"])  # a refresh moved the name: the next call follows
    moved = route(router, "0049301234")
    assert isinstance(moved, RouteToContacts) and moved.contacts[0].flow is not None
    assert moved.contacts[0].flow.host == "203.0.113.6"
    assert moved.contacts[0].failover == ()


def test_an_ip_trunk_needs_no_resolved_address() -> None:
    router, _addresses = router_for(Trunk(name="ip", host="198.51.100.7", prefixes=("00",)))
    found = route(router, "0049301234")
    assert isinstance(found, RouteToContacts) and found.contacts[0].flow is not None
    assert found.contacts[0].flow == TransportAddress("udp", "198.51.100.7", 5060)
    assert found.contacts[0].flow.server_name is None
    assert found.contacts[0].failover == ()


def test_a_tls_trunk_dials_each_address_of_its_name_and_checks_the_certificate_against_the_name() -> None:
    trunk = Trunk(name="tls", host="sip.carrier.test", transport="tls", port=5061, prefixes=("00",))
    router, addresses = router_for(trunk)
    unresolved = route(router, "0049301234")
    assert isinstance(unresolved, RouteReject) and unresolved.status == 503  # nothing to dial yet
    addresses.set("tls", ["203.0.113.5", "203.0.113.6"])
    found = route(router, "0049301234")
    assert isinstance(found, RouteToContacts)
    (contact,) = found.contacts
    assert contact.uri == "sip:0049301234@sip.carrier.test:5061;transport=tls"  # the name stays the name
    assert contact.flow == TransportAddress("tls", "203.0.113.5", 5061)
    assert contact.failover == (TransportAddress("tls", "203.0.113.6", 5061),)
    # RFC 5922 §4: the address is dialled, the certificate must be valid for the name (and SNI asks for it)
    assert contact.flow.server_name == "sip.carrier.test"
    assert [flow.server_name for flow in contact.failover] == ["sip.carrier.test"]


def test_a_registering_trunk_accepts_calls_from_the_addresses_its_name_resolves_to() -> None:
    config = CallControlConfig(trunks=(NAMED, REGISTERING))
    assert REGISTERING.accepts_resolved_host and not NAMED.accepts_resolved_host
    assert config.trunk_for_source("203.0.113.50") is None  # not resolved yet: nobody accepted
    config.trunk_addresses.set("registrar", ["203.0.113.50", "2001:db8::50"])
    config.trunk_addresses.set("carrier", ["203.0.113.5"])
    assert config.trunk_for_source("203.0.113.50") is REGISTERING
    assert config.trunk_for_source("2001:db8::50") is REGISTERING
    # a trunk that does not register is not trusted by its host's address (it lists inbound_sources)
    assert config.trunk_for_source("203.0.113.5") is None
    assert config.trunk_for_source("203.0.113.51") is None
    config.trunk_addresses.set("registrar", [])
    assert config.trunk_for_source("203.0.113.50") is None


def test_inbound_sources_win_over_the_resolved_host() -> None:
    listed = Trunk(
        name="listed",
        host="reg.carrier.test",
        register=True,
        username="edge",
        password="pw",
        inbound_sources=("192.0.2.0/24",),
    )
    config = CallControlConfig(trunks=(listed,))
    config.trunk_addresses.set("listed", ["203.0.113.50"])
    assert config.trunk_for_source("203.0.113.50") is None
    assert config.trunk_for_source("192.0.2.9") is listed


def test_fields_derived_at_init_are_not_configuration_keys() -> None:
    with pytest.raises(ValueError, match="unknown keys host_is_name"):
        parse_trunks([{"name": "t", "host": "sip.carrier.test", "host_is_name": False}])
    (trunk,) = parse_trunks([{"name": "t", "host": "[2001:db8::1]"}])
    assert not trunk.host_is_name
