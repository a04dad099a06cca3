"""Outbound registration to a real registrar over TCP and TLS: Kamailio with digest auth on loopback.

The same registrar and checks as ``test_trunk_registration`` (UDP), with the trunk on a stream transport and
our hub listening only on that transport. Our Contact names our listening address with ``;transport=tcp``
(or ``tls``), as RFC 3261 §19.1.1 asks when the Contact is not reachable over UDP. Kamailio (without
RFC 5626 outbound) reaches that Contact by opening its own connection to our listener, so the relayed
OPTIONS proves the Contact is right; our REGISTERs themselves keep reusing the one connection we opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from edge.trunk_registration import TrunkRegistrations
from signaling.sip.endpoint import SipEndpoint
from signaling.sip.outbound_registration import RegistrationClient, RegistrationState
from signaling.sip.timers import TimerSettings
from signaling.transport.application import SipRouter
from signaling.transport.hub import SipTransportHub
from tests.certificates import self_signed_certificate
from tests.e2e.conftest import free_port
from tests.e2e.test_trunk_registration import HOST, USER, Kamailio, eventually, kamailio, sample, trunk

pytestmark = pytest.mark.e2e

TLS_MODULE = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so")


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (an IP SAN: our client checks the name it dials)."""
    return self_signed_certificate(directory, HOST, ip_address=HOST)


@contextlib.asynccontextmanager
async def stream_node_hub(
    transport: str, certificate: tuple[Path, Path] | None = None
) -> AsyncIterator[SipTransportHub]:
    """Our side: a real endpoint and hub listening only on ``transport`` (tcp or tls) on a free port."""
    client_context = ssl.create_default_context(cafile=str(certificate[0])) if certificate else None
    hub = SipTransportHub(
        SipEndpoint(timers=TimerSettings(t1=0.5)), application=SipRouter(), tls_client_context=client_context
    )
    if transport == "tcp":
        await hub.start(HOST, udp_port=None, tcp_port=0)
    else:
        assert certificate is not None
        cert, key = certificate
        await hub.start(HOST, udp_port=None, tcp_port=None, tls_port=0, certfile=str(cert), keyfile=str(key))
    try:
        yield hub
    finally:
        await hub.stop()


def registrar_defines(transport: str, tmp_path: Path) -> tuple[dict[str, Any], tuple[Path, Path] | None]:
    """Kamailio's defines for a listener on ``transport`` (and the certificate both sides use for TLS)."""
    if transport == "tcp":
        return {"TCP_PORT": free_port()}, None
    if not TLS_MODULE.exists():
        pytest.skip("Kamailio's tls module is not installed (Debian: kamailio-tls-modules)")
    certificate = make_certificate(tmp_path)
    cert, key = certificate
    return {"TLS_PORT": free_port(), "TLS_CERT": f'"{cert}"', "TLS_KEY": f'"{key}"'}, certificate


def stream_port(defines: dict[str, Any]) -> int:
    return int(defines.get("TCP_PORT") or defines["TLS_PORT"])


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_registers_over_a_stream_with_digest_refreshes_and_unregisters_on_stop(
    tmp_path: Path, transport: str
) -> None:
    defines, certificate = registrar_defines(transport, tmp_path)
    # Kamailio grants at most 4 s whatever we ask (max_expires): refreshes come every 2 s.
    with kamailio(tmp_path, MAX_EXPIRES=4, **defines) as registrar:
        async with stream_node_hub(transport, certificate) as hub:
            listening = hub.tcp_address if transport == "tcp" else hub.tls_address
            assert listening is not None
            our_contact = f"sip:{USER}@{HOST}:{listening[1]};transport={transport}"
            registry = CollectorRegistry()
            port = stream_port(defines)
            registrations = TrunkRegistrations(hub, [trunk(port, transport=transport)], registry=registry)
            await registrations.start()
            client: RegistrationClient = registrations.clients["carrier"]
            try:
                assert await eventually(lambda: client.state is RegistrationState.REGISTERED, 15), (
                    client.status(),
                    registrar.log.read_text()[-2000:],
                )
                assert client.status().expires == 4
                assert client.stats.challenges_answered == 1
                # Every REGISTER so far went over the one connection we opened to the registrar.
                assert hub.stats.connections_opened == 1 and hub.stats.udp_datagrams_out == 0
                (to_registrar,) = hub.connections.values()
                assert to_registrar.peer == (HOST, port)

                bindings = await asyncio.to_thread(registrar.lookup)
                assert our_contact in bindings, bindings
                assert f"{transport}:{HOST}:{port}" in bindings  # the socket Kamailio received it on
                await relayed_options_reach_us(registrar, hub, transport)

                assert await eventually(lambda: client.stats.registrations >= 3, 30), client.status()
                assert (
                    client.status().state is RegistrationState.REGISTERED
                )  # via status(): mypy narrowed .state above
                assert client.stats.failures == 0 and client.stats.challenges_answered == 1
                assert to_registrar.connection_id in hub.connections  # refreshes reused it
                assert our_contact in await asyncio.to_thread(registrar.lookup)
                assert sample(registry, "uc_sip_trunk_registered") == 1.0
            finally:
                await registrations.stop()

            assert client.state is RegistrationState.STOPPED
            assert client.stats.unregistrations == 1
            assert "AOR not found" in await asyncio.to_thread(registrar.lookup)
            gone = await asyncio.to_thread(registrar.options_to_user)
            assert gone is not None and gone.code == 404


async def relayed_options_reach_us(registrar: Kamailio, hub: SipTransportHub, transport: str) -> None:
    """An OPTIONS to our AOR at Kamailio is relayed to our Contact over ``transport`` and answered by our
    hub (over a connection Kamailio opens to our listener: it does not do RFC 5626 flows)."""
    before = hub.stats.stream_messages_in
    relayed = await asyncio.to_thread(registrar.options_to_user)
    assert relayed is not None and relayed.code == 200, (relayed, registrar.log.read_text()[-2000:])
    assert relayed.headers.get("Allow") == SipRouter().allow  # answered by our hub
    assert hub.stats.stream_messages_in > before
    assert {connection.transport_name for connection in hub.connections.values()} == {transport}


async def test_a_registrar_certificate_we_do_not_trust_is_refused(tmp_path: Path) -> None:
    """Our TLS client checks the registrar's certificate: Kamailio's self-signed one is not in the system
    store, so nothing is sent and nothing is bound."""
    defines, certificate = registrar_defines("tls", tmp_path)
    assert certificate is not None
    with kamailio(tmp_path, **defines) as registrar:
        hub = SipTransportHub(SipEndpoint(timers=TimerSettings(t1=0.5)), application=SipRouter())
        cert, key = certificate
        await hub.start(HOST, udp_port=None, tcp_port=None, tls_port=0, certfile=str(cert), keyfile=str(key))
        try:
            registrations = TrunkRegistrations(
                hub, [trunk(stream_port(defines), transport="tls")], retry_base=600.0
            )
            await registrations.start()
            client = registrations.clients["carrier"]
            try:
                assert await eventually(lambda: client.state is RegistrationState.RETRYING, 15), (
                    client.status()
                )
                assert "CERTIFICATE_VERIFY_FAILED" in client.status().last_reason
                assert hub.stats.stream_messages_out == 0
                assert "AOR not found" in await asyncio.to_thread(registrar.lookup)
            finally:
                await registrations.stop()
        finally:
            await hub.stop()
