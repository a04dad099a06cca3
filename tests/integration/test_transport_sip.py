"""SIP transports on loopback with ephemeral ports: UDP, TCP, TLS, WebSocket and a real sipsak."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from signaling.sip.endpoint import SipEndpoint
from signaling.sip.message import Request, Response, build_request, parse_message, serialize
from signaling.sip.routing import TransportAddress
from signaling.sip.timers import TimerSettings
from signaling.transport.application import SipRouter
from signaling.transport.hub import SipTransportHub
from signaling.transport.websocket import sip_websocket_handler
from tests.certificates import self_signed_certificate

HOST = "127.0.0.1"


def options(transport: str, port: int, *, method: str = "OPTIONS", branch: str = "z9hG4bKint1") -> bytes:
    request = build_request(
        method,
        f"sip:edge@{HOST}",
        from_uri="<sip:tester@example.com>",
        to_uri="<sip:edge@example.com>",
        via_host=HOST,
        via_port=port,
        via_transport=transport,
        branch=branch,
    )
    return serialize(request)


@pytest.fixture
async def hub() -> AsyncIterator[SipTransportHub]:
    server = SipTransportHub(SipEndpoint(), application=SipRouter(), message_timeout=0.5)
    await server.start(HOST, udp_port=0, tcp_port=0)
    yield server
    await server.stop()


def udp_exchange(port: int, payload: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.bind((HOST, 0))
        sock.sendto(payload, (HOST, port))
        try:
            return sock.recv(65_536)
        except TimeoutError:
            return None


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
    message = parse_message(head)
    assert isinstance(message, Response)
    return message


async def test_options_over_udp_gets_200_with_capabilities(hub: SipTransportHub) -> None:
    assert hub.udp_address is not None
    reply = await asyncio.to_thread(udp_exchange, hub.udp_address[1], options("UDP", 5999))
    assert reply is not None
    response = parse_message(reply)
    assert isinstance(response, Response) and response.code == 200
    assert "OPTIONS" in (response.headers.get("Allow") or "")
    assert response.headers.get("Accept") == "application/sdp"
    assert response.headers.get("Supported") is not None
    assert hub.stats.udp_datagrams_in == 1 and hub.endpoint.stats.requests_in == 1


async def test_unknown_method_501_and_unhandled_method_405(hub: SipTransportHub) -> None:
    assert hub.udp_address is not None
    port = hub.udp_address[1]
    reply = await asyncio.to_thread(udp_exchange, port, options("UDP", 5999, method="FROBNICATE"))
    assert reply is not None and reply.startswith(b"SIP/2.0 501 ")
    reply = await asyncio.to_thread(
        udp_exchange, port, options("UDP", 5999, method="REGISTER", branch="z9hG4bKr")
    )
    assert reply is not None and reply.startswith(b"SIP/2.0 405 ")
    assert b"Allow: " in reply


async def test_garbage_datagram_gets_400_or_nothing(hub: SipTransportHub) -> None:
    assert hub.udp_address is not None
    port = hub.udp_address[1]
    assert await asyncio.to_thread(udp_exchange, port, b"\x00\xffgarbage\r\n\r\n", 0.5) is None
    broken = options("UDP", 5999).replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS")
    reply = await asyncio.to_thread(udp_exchange, port, broken)
    assert reply is not None and reply.startswith(b"SIP/2.0 400 ")
    assert hub.endpoint.stats.parse_errors == 2 and hub.endpoint.stats.bad_requests_sent == 1
    # the server is still answering
    reply = await asyncio.to_thread(udp_exchange, port, options("UDP", 5999, branch="z9hG4bKafter"))
    assert reply is not None and reply.startswith(b"SIP/2.0 200 ")


async def test_options_over_tcp_reuses_the_connection_and_answers_keepalives(hub: SipTransportHub) -> None:
    assert hub.tcp_address is not None
    reader, writer = await asyncio.open_connection(HOST, hub.tcp_address[1])
    try:
        writer.write(options("TCP", 5999))
        response = await read_response(reader)
        assert response.code == 200
        writer.write(b"\r\n\r\n")  # RFC 5626 ping
        assert await asyncio.wait_for(reader.readexactly(2), 2.0) == b"\r\n"
        # two messages in one segment, the second split across writes
        second = options("TCP", 5999, branch="z9hG4bKtcp2")
        third = options("TCP", 5999, branch="z9hG4bKtcp3")
        writer.write(second + third[:20])
        await writer.drain()
        writer.write(third[20:])
        assert (await read_response(reader)).code == 200
        assert (await read_response(reader)).code == 200
        assert hub.stats.connections_opened == 1 and len(hub.connections) == 1
    finally:
        writer.close()


async def test_oversized_tcp_message_closes_the_connection(hub: SipTransportHub) -> None:
    assert hub.tcp_address is not None
    reader, writer = await asyncio.open_connection(HOST, hub.tcp_address[1])
    huge = options("TCP", 5999).replace(b"Content-Length: 0", b"Content-Length: 100000")
    writer.write(huge)
    assert await asyncio.wait_for(reader.read(), 2.0) == b""  # EOF: closed by the server
    assert hub.stats.framing_errors == 1
    writer.close()


async def test_slow_tcp_peer_is_disconnected(hub: SipTransportHub) -> None:
    assert hub.tcp_address is not None
    reader, writer = await asyncio.open_connection(HOST, hub.tcp_address[1])
    writer.write(b"OPTIONS sip:edge@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP")  # and then nothing
    assert await asyncio.wait_for(reader.read(), 4.0) == b""
    assert hub.stats.slow_peers_closed == 1
    writer.close()


def make_certificate(directory: Path) -> tuple[str, str]:
    cert, key = self_signed_certificate(directory, "localhost")
    return str(cert), str(key)


async def test_options_over_tls(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    server = SipTransportHub(SipEndpoint(), application=SipRouter())
    await server.start(HOST, udp_port=None, tcp_port=None, tls_port=0, certfile=cert, keyfile=key)
    try:
        assert server.tls_address is not None
        client_context = ssl.create_default_context(cafile=cert)
        client_context.check_hostname = False
        reader, writer = await asyncio.open_connection(HOST, server.tls_address[1], ssl=client_context)
        writer.write(options("TLS", 5999))
        assert (await read_response(reader)).code == 200
        writer.close()
    finally:
        await server.stop()


async def test_options_over_websocket_needs_the_sip_subprotocol(hub: SipTransportHub) -> None:
    app = web.Application()
    app.router.add_get("/sip", sip_websocket_handler(hub))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{HOST}:{port}/sip") as plain:
                assert plain.status == 400
            async with session.ws_connect(f"ws://{HOST}:{port}/sip", protocols=("sip",)) as ws:
                assert ws.protocol == "sip"
                request = options("WS", 0).replace(f"{HOST}:0".encode(), b"df7jal23ls0d.invalid")
                await ws.send_str(request.decode())
                reply = await asyncio.wait_for(ws.receive(), 2.0)
                assert reply.type == aiohttp.WSMsgType.TEXT
                assert reply.data.startswith("SIP/2.0 200 ")
                assert "received=127.0.0.1" in reply.data
    finally:
        await runner.cleanup()


@pytest.mark.skipif(shutil.which("sipsak") is None, reason="sipsak is not installed")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipsak_options_gets_200(hub: SipTransportHub, transport: str) -> None:
    address = hub.udp_address if transport == "udp" else hub.tcp_address
    assert address is not None
    process = await asyncio.create_subprocess_exec(
        "sipsak",
        "-s",
        f"sip:edge@{HOST}:{address[1]}",
        "-H",
        HOST,
        f"--transport={transport}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 20.0)
    assert process.returncode == 0, output.decode(errors="replace")
    assert hub.endpoint.stats.requests_in >= 1


def outgoing_options(transport: str, target_port: int) -> Request:
    return build_request(
        "OPTIONS",
        f"sip:edge@{HOST}:{target_port}",
        from_uri="<sip:probe@example.com>",
        to_uri=f"<sip:edge@{HOST}>",
        via_host=HOST,
        via_port=0,
        via_transport=transport,
    )


async def test_hub_to_hub_requests_over_udp_and_tcp(hub: SipTransportHub) -> None:
    assert hub.udp_address is not None and hub.tcp_address is not None
    client = SipTransportHub(SipEndpoint(timers=TimerSettings(t1=0.05)), application=SipRouter())
    await client.start(HOST, udp_port=0, tcp_port=0)
    try:
        request = outgoing_options("UDP", hub.udp_address[1])
        request.headers.remove("Via")  # the endpoint writes its own Via for the chosen transport
        response = await asyncio.wait_for(
            client.request(request, TransportAddress("udp", HOST, hub.udp_address[1])), 5.0
        )
        assert response.code == 200
        request = outgoing_options("TCP", hub.tcp_address[1])
        request.headers.remove("Via")
        response = await asyncio.wait_for(
            client.request(request, TransportAddress("tcp", HOST, hub.tcp_address[1])), 5.0
        )
        assert response.code == 200
        assert client.stats.connections_opened == 1  # the answer came back over our connection
        assert hub.stats.connections_opened == 1
    finally:
        await client.stop()


@contextlib.asynccontextmanager
async def tls_server_and_client(
    directory: Path,
) -> AsyncIterator[tuple[SipTransportHub, SipTransportHub, int]]:
    """A hub serving TLS with a certificate for ``edge.test`` and a client hub that trusts it (and has
    local TLS and TCP addresses for its Via, listening on neither): (server, client, server's TLS port)."""
    cert, key = self_signed_certificate(directory, "edge.test", dns_name="edge.test")
    server = SipTransportHub(SipEndpoint(), application=SipRouter())
    await server.start(HOST, udp_port=None, tcp_port=None, tls_port=0, certfile=str(cert), keyfile=str(key))
    client = SipTransportHub(
        SipEndpoint(timers=TimerSettings(t1=0.05)),
        application=SipRouter(),
        tls_client_context=ssl.create_default_context(cafile=str(cert)),
    )
    await client.start(HOST, udp_port=0, tcp_port=None)
    client.endpoint.local_addresses["tls"] = (HOST, 5061)
    client.endpoint.local_addresses["tcp"] = (HOST, 5060)
    assert server.tls_address is not None
    try:
        yield server, client, server.tls_address[1]
    finally:
        await client.stop()
        await server.stop()


def options_to(
    client: SipTransportHub, transport: str, port: int, server_name: str | None = None
) -> asyncio.Future[Response]:
    """An OPTIONS from ``client`` to ``HOST:port`` (its Via written by the endpoint), as a future."""
    request = outgoing_options(transport.upper(), port)
    request.headers.remove("Via")
    destination = TransportAddress(transport, HOST, port, server_name=server_name)  # type: ignore[arg-type]
    return asyncio.ensure_future(asyncio.wait_for(client.request(request, destination), 10.0))


async def test_a_tls_flow_is_reused_only_for_the_name_its_certificate_was_checked_against(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 5922 §4 with failover: requests to an address on behalf of a name (``server_name``) need a
    connection whose certificate was checked for that name; requests that name no server (responses,
    in-dialog requests to a Contact) take any flow to the address."""
    async with tls_server_and_client(tmp_path) as (server, client, port):
        assert (await options_to(client, "tls", port, "edge.test")).code == 200  # checked against the name
        assert (await options_to(client, "tls", port, "edge.test")).code == 200
        assert (await options_to(client, "tls", port)).code == 200  # any flow to the address will do
        assert client.stats.connections_opened == 1
        # Another name: the flow checked for edge.test is not taken, and a new one fails the check.
        with caplog.at_level(logging.WARNING, logger="signaling.transport.hub"):
            for _ in range(2):
                with pytest.raises(ConnectionError):
                    await options_to(client, "tls", port, "other.test")
        assert client.stats.connections_opened == 1
        assert server.stats.connections_opened == 1
        # Why, once (the second failure within 10 s is counted, not logged again).
        (line,) = [r.getMessage() for r in caplog.records if "SIP connection failed" in r.getMessage()]
        expected = f"SIP connection failed: TLS {HOST}:{port} (certificate checked for other.test): "
        assert line.startswith(expected)
        assert "other.test" in line.partition("): ")[2]  # the certificate error names the name it wanted


async def test_a_burst_of_requests_to_a_peer_not_yet_connected_shares_one_connection(tmp_path: Path) -> None:
    """Twenty requests handed to the hub at once, before any connection to the TLS peer exists (a burst of
    calls to a trunk after a restart): one connection is opened and all twenty go over it, each answered;
    a burst to a peer that refuses fails every request."""
    async with tls_server_and_client(tmp_path) as (server, client, port):
        answers = await asyncio.gather(*(options_to(client, "tls", port, "edge.test") for _ in range(20)))
        assert [answer.code for answer in answers] == [200] * 20
        assert client.stats.connections_opened == 1 and server.stats.connections_opened == 1
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
            closed.bind((HOST, 0))  # bound, not listening: connections are refused
            dead = closed.getsockname()[1]
            failed = await asyncio.gather(
                *(options_to(client, "tcp", dead) for _ in range(5)), return_exceptions=True
            )
        assert all(isinstance(outcome, ConnectionError) for outcome in failed), failed
        assert client.stats.connections_opened == 1


async def test_datagrams_to_a_peer_known_by_name_share_one_lookup(
    hub: SipTransportHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests to ``localhost`` (a Contact or Record-Route by name): three at once and one after are
    resolved once — the lookup is shared while in flight and kept afterwards — and all are answered; a
    name that does not resolve fails its requests."""
    assert hub.udp_address is not None
    client = SipTransportHub(SipEndpoint(timers=TimerSettings(t1=0.05)), application=SipRouter())
    await client.start(HOST, udp_port=0, tcp_port=None)
    lookups: list[str] = []
    real_getaddrinfo = client.loop.getaddrinfo

    async def counting_getaddrinfo(host: str, *args: object, **kwargs: object) -> object:
        lookups.append(host)
        if host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return await real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(client.loop, "getaddrinfo", counting_getaddrinfo)

    def ask(host: str) -> asyncio.Future[Response]:
        request = outgoing_options("UDP", hub.udp_address[1])  # type: ignore[index]
        request.headers.remove("Via")
        return asyncio.ensure_future(
            client.request(request, TransportAddress("udp", host, hub.udp_address[1]))
        )  # type: ignore[index]

    try:
        answers = await asyncio.wait_for(
            asyncio.gather(ask("localhost"), ask("localhost"), ask("localhost")), 5
        )
        answers.append(await asyncio.wait_for(ask("localhost"), 5))
        assert [answer.code for answer in answers] == [200] * 4
        assert lookups == ["localhost"]
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(ask("nowhere.invalid"), 5)
    finally:
        await client.stop()


async def test_hub_request_times_out_or_fails_cleanly() -> None:
    client = SipTransportHub(SipEndpoint(timers=TimerSettings(t1=0.01)), application=SipRouter())
    await client.start(HOST, udp_port=0, tcp_port=None)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        dead_port = probe.getsockname()[1]  # bound, not listening: connections are refused
        try:
            request = outgoing_options("UDP", dead_port)
            request.headers.remove("Via")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.request(request, TransportAddress("udp", HOST, dead_port)), 5.0)
            request = outgoing_options("TCP", dead_port)
            request.headers.remove("Via")
            client.endpoint.local_addresses["tcp"] = (HOST, 5060)
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(client.request(request, TransportAddress("tcp", HOST, dead_port)), 5.0)
            assert client.endpoint.active_transactions == 0
        finally:
            await client.stop()
