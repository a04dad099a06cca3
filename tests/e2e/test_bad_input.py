"""Bad input against the real running server: each gets the RFC answer or is dropped, is counted in
/metrics, and the process keeps answering."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Server, running_server

pytestmark = pytest.mark.e2e

# The largest UDP payload IPv4 can carry (65,535 - 20 IP - 8 UDP): a "> 64 KiB datagram" cannot exist.
MAX_IPV4_UDP_PAYLOAD = 65_507
SMALL_LIMIT = 16_384


@pytest.fixture(scope="module")
def small_limit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second server whose message limit (UC_EDGE_SIP_MAX_MESSAGE_BYTES) fits in one datagram."""
    log = tmp_path_factory.mktemp("small") / "serve.log"
    with running_server({"UC_EDGE_SIP_MAX_MESSAGE_BYTES": str(SMALL_LIMIT)}, log) as running:
        yield running


class UdpProbe:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()

    def request(
        self,
        method: str,
        server_port: int,
        *,
        vias: int = 1,
        extra: str = "",
        body: str = "",
        content_length: int | None = None,
    ) -> bytes:
        via = f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{os.urandom(6).hex()};rport\r\n"
        # Extra hops as short as a Via gets, so a thousand of them still fit in one datagram.
        via += "".join(f"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{hop}\r\n" for hop in range(1, vias))
        length = len(body) if content_length is None else content_length
        return (
            f"{method} sip:127.0.0.1:{server_port} SIP/2.0\r\n{via}Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1>;tag={os.urandom(4).hex()}\r\nTo: <sip:127.0.0.1:{server_port}>\r\n"
            f"Call-ID: {os.urandom(8).hex()}@127.0.0.1\r\nCSeq: 1 {method}\r\n{extra}"
            f"Content-Length: {length}\r\n\r\n{body}"
        ).encode()

    def exchange(self, data: bytes, server_port: int, wait: float = 2.0) -> bytes | None:
        """Send one datagram; the first answer, or None when nothing came back within ``wait``."""
        self.sock.settimeout(wait)
        self.sock.sendto(data, ("127.0.0.1", server_port))
        try:
            return self.sock.recv(70_000)
        except TimeoutError:
            return None


@pytest.fixture
def probe() -> Iterator[UdpProbe]:
    udp = UdpProbe()
    yield udp
    udp.close()


def increase(server: Server, before: dict[str, float], name: str) -> float:
    return server.metrics().get(name, 0.0) - before.get(name, 0.0)


def assert_still_answers(server: Server, probe: UdpProbe) -> None:
    assert server.alive(), server.stderr_tail()
    answer = probe.exchange(probe.request("OPTIONS", server.sip_port), server.sip_port)
    assert answer is not None and answer.startswith(b"SIP/2.0 200 "), answer


def test_garbage_datagram_is_dropped_and_counted(server: Server, probe: UdpProbe) -> None:
    before = server.metrics()
    garbage = bytes(range(256)) * 4 + os.urandom(512)
    assert probe.exchange(garbage, server.sip_port, wait=0.5) is None
    assert increase(server, before, "uc_sip_parse_errors_total") == 1
    assert_still_answers(server, probe)


def test_datagram_over_the_message_limit_is_dropped(small_limit_server: Server, probe: UdpProbe) -> None:
    server = small_limit_server
    before = server.metrics()
    oversized = probe.request("OPTIONS", server.sip_port, body="x" * (SMALL_LIMIT + 4096))
    assert len(oversized) > SMALL_LIMIT
    answer = probe.exchange(oversized, server.sip_port, wait=1.0)
    assert answer is None or answer.startswith((b"SIP/2.0 400 ", b"SIP/2.0 513 ")), answer[:200]
    assert increase(server, before, "uc_sip_parse_errors_total") == 1
    assert_still_answers(server, probe)


def test_largest_possible_datagram_is_survived(server: Server, probe: UdpProbe) -> None:
    # Anything above 64 KiB cannot even leave the client: the kernel refuses it (EMSGSIZE) ...
    with pytest.raises(OSError) as refused:
        probe.sock.sendto(b"x" * (64 * 1024 + 1), ("127.0.0.1", server.sip_port))
    assert refused.value.errno == errno.EMSGSIZE
    # ... so the worst a UDP peer can send is 65,507 bytes of junk: dropped, counted, nothing else.
    before = server.metrics()
    assert probe.exchange(b"\xff" * MAX_IPV4_UDP_PAYLOAD, server.sip_port, wait=0.5) is None
    assert increase(server, before, "uc_sip_parse_errors_total") == 1
    assert_still_answers(server, probe)


def test_header_bomb_of_1000_vias_is_refused(server: Server, probe: UdpProbe) -> None:
    before = server.metrics()
    bomb = probe.request("OPTIONS", server.sip_port, vias=1000)
    assert len(bomb) <= MAX_IPV4_UDP_PAYLOAD
    answer = probe.exchange(bomb, server.sip_port, wait=1.0)
    assert answer is None or answer.startswith(b"SIP/2.0 400 "), answer[:300]
    counted = increase(server, before, "uc_sip_parse_errors_total") + increase(
        server, before, "uc_sip_bad_requests_sent_total"
    )
    assert counted >= 1
    assert_still_answers(server, probe)


def test_content_length_beyond_the_body_gets_400(server: Server, probe: UdpProbe) -> None:
    before = server.metrics()
    answer = probe.exchange(
        probe.request("OPTIONS", server.sip_port, body="hello", content_length=50), server.sip_port
    )
    assert answer is not None and answer.startswith(b"SIP/2.0 400 "), answer
    assert b"Content-Length" in answer.split(b"\r\n", 1)[0]
    assert increase(server, before, "uc_sip_bad_requests_sent_total") == 1
    assert increase(server, before, "uc_sip_parse_errors_total") == 1
    assert_still_answers(server, probe)


def test_unknown_method_gets_501(server: Server, probe: UdpProbe) -> None:
    before = server.metrics()
    answer = probe.exchange(probe.request("FROBNICATE", server.sip_port), server.sip_port)
    assert answer is not None and answer.startswith(b"SIP/2.0 501 "), answer
    assert b"\r\nAllow: " in answer
    # No counter names 501 answers (reported); the request is counted as received.
    assert increase(server, before, "uc_sip_requests_received_total") == 1
    assert_still_answers(server, probe)


async def test_websocket_message_over_the_limit_closes_the_socket(server: Server, tmp_path: Path) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"ws://127.0.0.1:{server.http_port}/sip", protocols=("sip",)) as ws,
    ):
        await ws.send_str("OPTIONS sip:x SIP/2.0\r\nX-Pad: " + "a" * 70_000 + "\r\n\r\n")
        message = await ws.receive(timeout=5)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    status, _ = server.http("/healthz")
    assert status == 200
