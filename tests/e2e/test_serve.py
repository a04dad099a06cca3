"""`uc-edge serve` as a process: it listens where it says, answers SIP and HTTP, and stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket

from tests.e2e.conftest import Server


def test_banner_prints_sip_websocket_and_http_endpoints(server: Server) -> None:
    text = "\n".join(server.banner)
    assert f"sip:127.0.0.1:{server.sip_port};transport=udp" in text
    assert f"sip:127.0.0.1:{server.sip_port};transport=tcp" in text
    assert f"ws://127.0.0.1:{server.http_port}/sip" in text
    assert f"http://127.0.0.1:{server.http_port}/metrics" in text


def test_health_and_metrics(server: Server) -> None:
    status, body = server.http("/healthz")
    assert status == 200
    assert json.loads(body)["node_id"] == "e2e-node"
    status, body = server.http("/readyz")
    assert status in (200, 503)
    assert set(json.loads(body)["checks"]) == {"postgres", "redis", "kafka", "s3"}
    status, body = server.http("/metrics")
    assert status == 200
    assert b"uc_sip_messages_received_total" in body
    assert b"uc_media_leg_mos" in body  # the media plane exports into the same registry


def test_answers_sip_options_over_udp(server: Server) -> None:
    branch = "z9hG4bK" + os.urandom(6).hex()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        local_port = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:127.0.0.1:{server.sip_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1>;tag={os.urandom(4).hex()}\r\n"
            f"To: <sip:127.0.0.1:{server.sip_port}>\r\n"
            f"Call-ID: {os.urandom(8).hex()}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.settimeout(5)
        sock.sendto(request.encode(), ("127.0.0.1", server.sip_port))
        data, _ = sock.recvfrom(65536)
    assert data.startswith(b"SIP/2.0 200 ")
    assert branch.encode() in data
    assert b"rport=" + str(local_port).encode() in data


def test_sigterm_stops_cleanly(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=15) == 0
