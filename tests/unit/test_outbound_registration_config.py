"""Trunk registration settings: the Trunk fields, their validation, and the binding the shell asks for."""

from __future__ import annotations

import json

import pytest

from edge.settings import SettingsError, load_settings
from edge.trunk_registration import registration_config, trunk_registration_lines
from signaling.callcontrol.config import Trunk, parse_trunks
from signaling.sip.dialog import LocalAddress
from signaling.sip.routing import TransportAddress

LOCAL = LocalAddress("UDP", "192.0.2.1", 5060)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("UC_EDGE_"):
            monkeypatch.delenv(key)


def test_registration_is_off_by_default() -> None:
    trunk = Trunk("carrier", "198.51.100.7")
    assert trunk.register is False and trunk.register_expires == 3600
    assert trunk.registration_user is None and trunk.registration_domain == "198.51.100.7"


def test_parse_trunks_reads_the_registration_keys() -> None:
    (trunk,) = parse_trunks(
        [
            {
                "name": "carrier",
                "host": "198.51.100.7",
                "username": "edge",
                "password": "s3cret",
                "register": True,
                "register_expires": 600,
                "register_user": "+4930123",
                "register_domain": "sip.carrier.example",
            }
        ]
    )
    assert trunk.register and trunk.register_expires == 600
    assert trunk.registration_user == "+4930123" and trunk.registration_domain == "sip.carrier.example"


def test_registration_user_defaults_to_the_username() -> None:
    trunk = Trunk("carrier", "198.51.100.7", username="edge", password="s3cret", register=True)
    assert trunk.registration_user == "edge"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"register": True}, "trunk carrier: register needs register_user or username"),
        ({"register": "yes"}, "register must be true or false"),
        ({"register_expires": 59}, "register_expires must be a whole number of seconds from 60 to 86400"),
        ({"register_expires": 86401}, "from 60 to 86400, not 86401"),
        ({"register_expires": "3600"}, "register_expires must be a whole number"),
        ({"register_expires": True}, "register_expires must be a whole number"),
        ({"register_user": "edge@carrier"}, "register_user 'edge@carrier' is not a SIP user or host"),
        ({"register_user": ""}, "register_user '' is not"),
        ({"register_domain": "carrier example"}, "register_domain 'carrier example' is not"),
        ({"register_domain": "carrier;lr"}, "register_domain"),
    ],
)
def test_bad_registration_fields_are_named(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Trunk("carrier", "198.51.100.7", **fields)  # type: ignore[arg-type]


def test_a_bad_trunk_is_one_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    trunks = [{"name": "carrier", "host": "198.51.100.7", "register": True, "register_expires": 10}]
    monkeypatch.setenv("UC_EDGE_SIP_TRUNKS", json.dumps(trunks))
    with pytest.raises(SettingsError, match="register_expires"):
        load_settings()


def test_a_registering_trunk_loads_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    trunks = [{"name": "carrier", "host": "198.51.100.7", "register_user": "edge", "register": True}]
    monkeypatch.setenv("UC_EDGE_SIP_TRUNKS", json.dumps(trunks))
    (trunk,) = parse_trunks(load_settings().sip_trunks)
    assert trunk.register and trunk.registration_user == "edge"


# ---- the binding the shell asks for -------------------------------------------------------------------


def test_binding_at_the_trunk_host() -> None:
    trunk = Trunk("carrier", "198.51.100.7", 5070, username="edge", password="pw", register=True)
    config = registration_config(trunk, LOCAL)
    assert config.registrar_uri == "sip:198.51.100.7:5070"
    assert config.aor == "sip:edge@198.51.100.7"
    assert config.contact == "<sip:edge@192.0.2.1:5060>"
    assert config.destination == TransportAddress("udp", "198.51.100.7", 5070)
    assert (config.username, config.password, config.expires) == ("edge", "pw", 3600)


def test_binding_in_a_separate_domain_over_tcp() -> None:
    trunk = Trunk(
        "carrier",
        "198.51.100.7",
        transport="tcp",
        username="auth-id",
        password="pw",
        register=True,
        register_user="4930123",
        register_domain="sip.carrier.example",
        register_expires=600,
    )
    config = registration_config(trunk, LocalAddress("TCP", "2001:db8::1", 5062), retry_base=5.0)
    assert config.registrar_uri == "sip:sip.carrier.example"
    assert config.aor == "sip:4930123@sip.carrier.example"
    assert config.contact == "<sip:4930123@[2001:db8::1]:5062;transport=tcp>"
    assert config.destination == TransportAddress("tcp", "198.51.100.7", 5060)
    assert config.username == "auth-id" and config.expires == 600 and config.retry_base == 5.0


def test_a_trunk_that_cannot_register_is_refused() -> None:
    trunk = Trunk("carrier", "198.51.100.7")
    with pytest.raises(ValueError, match="register needs"):
        registration_config(trunk, LOCAL)


def test_cli_lines_for_trunk_registrations() -> None:
    rows: list[dict[str, object]] = [
        {
            "name": "carrier",
            "state": "registered",
            "aor": "sip:edge@carrier.example",
            "last_status": 200,
            "last_reason": "registered for 600 s",
            "expires_in": 500.0,
            "next_attempt_in": 200.0,
        },
        {"name": "backup", "state": "unavailable", "last_reason": "no tls listener to register from"},
    ]
    assert trunk_registration_lines(rows) == [
        "carrier\tregistered\tsip:edge@carrier.example\tstatus 200\texpires in 500.0s\t"
        "next attempt in 200.0s\tregistered for 600 s",
        "backup\tunavailable\t-\tstatus -\tno tls listener to register from",
    ]
    assert trunk_registration_lines([]) == ["no trunk registrations"]


def test_a_registering_trunk_accepts_calls_from_its_own_address() -> None:
    registering = Trunk(name="carrier", host="198.51.100.7", username="u", password="p", register=True)
    assert registering.accepts_from("198.51.100.7")
    assert not registering.accepts_from("198.51.100.8")
    # Not registering: only inbound_sources count, and there are none.
    assert not Trunk(name="static", host="198.51.100.7").accepts_from("198.51.100.7")
    # Explicit sources win over the derived one.
    listed = Trunk(
        name="listed",
        host="198.51.100.7",
        username="u",
        password="p",
        register=True,
        inbound_sources=("203.0.113.0/24",),
    )
    assert listed.accepts_from("203.0.113.9") and not listed.accepts_from("198.51.100.7")
    # A host name is not resolved here: nothing is accepted until its addresses are listed.
    named = Trunk(name="named", host="sip.example.net", username="u", password="p", register=True)
    assert named.accepted_sources == () and not named.accepts_from("198.51.100.7")
