"""`uc-edge serve` as a process: it listens where it says, answers SIP and HTTP, and stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both UDP and TCP (SIP listens on both with the same number)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


class Server:
    def __init__(self, process: subprocess.Popen[str], sip_port: int, http_port: int, banner: list[str]):
        self.process = process
        self.sip_port = sip_port
        self.http_port = http_port
        self.banner = banner

    def http(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    sip_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UC_EDGE_")}
    env.update(
        UC_EDGE_SIP_UDP_PORT=str(sip_port),
        UC_EDGE_SIP_TCP_PORT=str(sip_port),
        UC_EDGE_HTTP_PORT=str(http_port),
        UC_EDGE_LOG_FORMAT="json",
        UC_EDGE_NODE_ID="e2e-node",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    banner: list[str] = []
    deadline = time.monotonic() + 30
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        banner.append(line.rstrip())
        if "metrics" in line:
            break
    if process.poll() is not None or not any("metrics" in line for line in banner):
        process.kill()
        raise AssertionError(f"server did not start: {banner} {process.stderr.read() if process.stderr else ''}")
    yield Server(process, sip_port, http_port, banner)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)


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
