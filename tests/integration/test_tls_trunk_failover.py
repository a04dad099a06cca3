"""A TLS trunk named by DNS: each address its name resolves to is dialled in turn (RFC 3263 §4.3), and every
connection still checks the server's certificate against the name (RFC 5922 §4), on real loopback TLS.

The trunk ``carrier.test`` resolves (a fake :class:`HostResolver`: the only thing faked, the DNS step) to
127.0.0.2 then 127.0.0.3. On 127.0.0.3 a TLS responder with a certificate for ``carrier.test`` answers
the INVITE 200 and the BYE 200; on 127.0.0.2 nothing listens, or a responder answers 503, or one shows a
certificate the client trusts but issued for another name. In each case SIPp's stock UAC, calling the
node over UDP, must get a whole call (INVITE, ACK, BYE) through the second address, one routing attempt
per address, and the second responder must have seen the name as SNI and the call's requests on one
connection.

The responders are a few lines of asyncio here (the SIPp in Debian has no TLS); needs ``sipp``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from signaling.callcontrol.config import Trunk
from signaling.sip.message import Request, build_response, parse_message, serialize
from tests.certificates import self_signed_certificate
from tests.integration.test_trunk_failover import (
    FIRST,
    NUMBER,
    SECOND,
    Node,
    free_port,
    needs_sipp,  # noqa: F401  (autouse: skipped without sipp)
    node_with_trunk,
    start_peer,
    stop_peer,
)

NAME = "carrier.test"


@dataclass
class TlsResponder:
    """A SIP-over-TLS peer: answers INVITE with ``invite_status`` (200 with an SDP answer), BYE 200,
    keeps ACKs; remembers the SNI names it was asked for and how many connections it accepted."""

    invite_status: int
    sni: list[str | None] = field(default_factory=list)
    connections: int = 0
    methods: list[str] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() in (b"content-length", b"l"):
                        length = int(value.strip())
                message = parse_message(head + await reader.readexactly(length))
                if not isinstance(message, Request):
                    continue
                self.methods.append(message.method)
                answer = self.answer(message)
                if answer is not None:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def answer(self, request: Request) -> bytes | None:
        if request.method == "INVITE":
            if self.invite_status != 200:
                return serialize(build_response(request, self.invite_status, to_tag="trunk503"))
            body = (
                b"v=0\r\no=- 2 2 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
                b"m=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            )
            response = build_response(
                request,
                200,
                to_tag="trunk200",
                headers=[
                    ("Contact", f"<sip:{NUMBER}@{SECOND}:{request.uri.port};transport=tls>"),
                    ("Content-Type", "application/sdp"),
                ],
                body=body,
            )
            return serialize(response)
        if request.method in ("BYE", "CANCEL", "OPTIONS"):
            return serialize(build_response(request, 200))
        return None  # ACK


def certificate_for(directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir()
    return self_signed_certificate(directory, name, dns_name=name)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def start_responder(
    responder: TlsResponder, host: str, port: int, context: ssl.SSLContext
) -> asyncio.Server:
    def remember_sni(_sock: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> None:
        responder.sni.append(server_name)

    context.sni_callback = remember_sni  # type: ignore[assignment]
    return await asyncio.start_server(responder.serve, host, port, ssl=context)


@dataclass
class Scenario:
    first: str  # "nothing" | "503" | "wrong-name"
    answering: TlsResponder = field(default_factory=lambda: TlsResponder(200))
    refusing: TlsResponder | None = None


@pytest.fixture
async def tls_trunk(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Scenario, Node, int]]:
    first: str = request.param
    port = free_port([FIRST, SECOND], socket.SOCK_STREAM)
    good_cert, good_key = certificate_for(tmp_path / "good", NAME)
    scenario = Scenario(first)
    servers = [await start_responder(scenario.answering, SECOND, port, server_context(good_cert, good_key))]
    client_context = ssl.create_default_context(cafile=str(good_cert))
    if first == "503":
        scenario.refusing = TlsResponder(503)  # the trunk's name and certificate, but out of service
        servers.append(
            await start_responder(scenario.refusing, FIRST, port, server_context(good_cert, good_key))
        )
    elif first == "wrong-name":
        scenario.refusing = TlsResponder(200)  # would answer, but its certificate is for another name
        wrong_cert, wrong_key = certificate_for(tmp_path / "wrong", "other.test")
        client_context.load_verify_locations(cafile=str(wrong_cert))  # trusted: only the name is wrong
        servers.append(
            await start_responder(scenario.refusing, FIRST, port, server_context(wrong_cert, wrong_key))
        )

    trunk = Trunk(name="carrier", host=NAME, port=port, transport="tls", prefixes=("00",))
    try:
        async with node_with_trunk(trunk, [FIRST, SECOND]) as (node, hub):
            hub.tls_client_context = client_context
            yield scenario, node, port
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


@pytest.mark.parametrize("tls_trunk", ["nothing", "503", "wrong-name"], indirect=True)
async def test_a_tls_trunk_call_fails_over_to_the_next_address_and_checks_the_name_on_each(
    tls_trunk: tuple[Scenario, Node, int], tmp_path: Path
) -> None:
    scenario, node, port = tls_trunk
    node_port, calls, registry = node.port, node.calls, node.registry
    with capture_logs() as logs:
        client = await start_peer(
            "-sn", "uac", f"127.0.0.1:{node_port}", "-s", NUMBER, "-i", "127.0.0.1",
            "-p", str(free_port(["127.0.0.1"])), "-m", "1", "-timeout", "30",
            cwd=tmp_path,
        )  # fmt: skip
        try:
            output, _ = await asyncio.wait_for(client.communicate(), 40)
        finally:
            await stop_peer(client)
        assert client.returncode == 0, output.decode(errors="replace")[-3000:]
        await node.service.idle()

    answering = scenario.answering
    assert answering.methods == ["INVITE", "ACK", "BYE"]
    assert answering.sni == [NAME]  # the address was dialled, the name asked for
    assert answering.connections == 1  # the ACK and BYE went over the connection the INVITE opened

    (call_id,) = calls.started
    attempts = sorted((a.target, a.result, a.sip_status) for a in await calls.list_routing_attempts(call_id))
    uri = f"sip:{NUMBER}@{NAME}:{port};transport=tls"
    # A transport error counts as the 503 RFC 3261 §8.1.3.1 makes of it.
    assert attempts == [(f"{uri};maddr={FIRST}", "failed", 503), (f"{uri};maddr={SECOND}", "answered", 200)]
    (line,) = [line for line in logs if line["event"] == "trunk address failed, trying next"]
    assert (line["trunk"], line["address"], line["next_address"]) == ("carrier", FIRST, SECOND)
    if scenario.first == "503":
        assert line["reason"] == "503"
        assert scenario.refusing is not None and scenario.refusing.methods == ["INVITE", "ACK"]
    else:
        assert line["reason"] == "transport error"
    if scenario.first == "wrong-name":
        # The handshake reached the server, which was asked for the trunk's name, and went no further.
        assert scenario.refusing is not None and scenario.refusing.sni == [NAME]
        assert scenario.refusing.methods == []
    assert registry.get_sample_value("uc_sip_trunk_failovers_total", {"trunk": "carrier"}) == 1
