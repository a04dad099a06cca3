"""RFC 3263 failover across the addresses of a trunk's host name, on real loopback sockets with SIPp peers.

The trunk ``carrier.test`` resolves (through a fake :class:`HostResolver`: the only thing faked, the DNS
step) to 127.0.0.2 then 127.0.0.3. A SIPp client calls through the real CallControlService and hub; on
127.0.0.2 either a SIPp UAS answers 503 or nothing listens (Timer B, shortened through T1), and the call
is answered by SIPp's stock UAS on 127.0.0.3. The client's call must succeed end to end (INVITE, ACK,
BYE), with one routing attempt per address and the failover counted.

Needs ``sipp`` (sip-tester); skipped without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.registry import CollectorRegistry
from structlog.testing import capture_logs

from edge.trunk_dns import TrunkDns
from signaling.callcontrol.config import CallControlConfig, Trunk
from signaling.callcontrol.service import CallControlService
from signaling.sip.timers import TimerSettings
from signaling.transport.hub import SipTransportHub
from storage.memory.sql_domains import MemoryCallRepository
from storage.ports import CallSession, NewCall
from tests.integration.test_trunk_dns import call_node

# Timer B is 64*T1: 3.2 s here instead of 32 s, so that the silent address fails over quickly.
TIMERS = TimerSettings(t1=0.05, t2=0.4)
FIRST, SECOND = "127.0.0.2", "127.0.0.3"
NUMBER = "0049301234"

UAS_503 = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="answer every INVITE 503">
  <recv request="INVITE" />
  <send><![CDATA[
SIP/2.0 503 Service Unavailable
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="ACK" />
</scenario>
"""


class RecordingCalls(MemoryCallRepository):
    """The in-memory repository, remembering which calls were started (SIPp picks the Call-ID)."""

    def __init__(self) -> None:
        super().__init__(node_id="it-node")
        self.started: list[uuid.UUID] = []

    async def start_call(self, call: NewCall) -> CallSession:
        session = await super().start_call(call)
        self.started.append(session.call_id)
        return session


@dataclass
class Node:
    port: int
    calls: RecordingCalls
    config: CallControlConfig
    registry: CollectorRegistry
    service: CallControlService


def free_port(hosts: Sequence[str], kind: socket.SocketKind = socket.SOCK_DGRAM) -> int:
    """A UDP (or ``kind``) port free on every one of ``hosts`` (a trunk has one port for all its
    addresses)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
            try:
                with contextlib.ExitStack() as stack:
                    for host in hosts[1:]:
                        other = stack.enter_context(socket.socket(socket.AF_INET, kind))
                        other.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


async def start_peer(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    sipp = shutil.which("sipp")
    assert sipp is not None
    return await asyncio.create_subprocess_exec(
        sipp,
        *args,
        "-nostdin",
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group: killed by group, never by name
    )


async def stop_peer(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(process.wait(), 5)


@contextlib.asynccontextmanager
async def node_with_trunk(
    trunk: Trunk, addresses: Sequence[str]
) -> AsyncIterator[tuple[Node, SipTransportHub]]:
    """Call control on a loopback UDP hub with ``trunk``, whose host name resolves to ``addresses`` (the
    fake resolver checks it is asked for the trunk's name, port and transport)."""
    config = CallControlConfig(
        local_domains=frozenset({"uc-edge.local", "127.0.0.1"}), trunks=(trunk,), require_auth=False
    )

    async def resolve(host: str, port: int, transport: str) -> Sequence[str]:
        assert (host, port, transport) == (trunk.host, trunk.port, trunk.transport)
        return list(addresses)

    registry = CollectorRegistry()
    dns = TrunkDns(config.trunks, config.trunk_addresses, resolver=resolve, registry=registry)
    await dns.start()
    calls = RecordingCalls()
    hub, service = await call_node(config, calls, TIMERS)
    port = hub.endpoint.local_addresses["udp"][1]
    try:
        yield Node(port, calls, config, registry, service), hub
    finally:
        await service.stop()
        await hub.stop()
        await dns.stop()


@pytest.fixture
async def node() -> AsyncIterator[tuple[Node, int]]:
    trunk_port = free_port([FIRST, SECOND])
    trunk = Trunk(name="carrier", host="carrier.test", port=trunk_port, prefixes=("00",))
    async with node_with_trunk(trunk, [FIRST, SECOND]) as (running, _hub):
        yield running, trunk_port


async def call_through(node: Node, trunk_port: int, workdir: Path, first_answers_503: bool) -> None:
    peers = []
    try:
        if first_answers_503:
            scenario = workdir / "uas_503.xml"
            scenario.write_text(UAS_503)
            peers.append(
                await start_peer(
                    "-sf", str(scenario), "-i", FIRST, "-p", str(trunk_port), "-m", "1", cwd=workdir
                )
            )
        answering = await start_peer(
            "-sn", "uas", "-i", SECOND, "-p", str(trunk_port), "-m", "1", cwd=workdir
        )
        peers.append(answering)
        await asyncio.sleep(0.5)  # SIPp binds its socket
        client = await start_peer(
            "-sn",
            "uac",
            f"127.0.0.1:{node.port}",
            "-s",
            NUMBER,
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port(["127.0.0.1"])),
            "-m",
            "1",
            "-timeout",
            "30",
            cwd=workdir,
        )
        peers.append(client)
        output, _ = await asyncio.wait_for(client.communicate(), 40)
        assert client.returncode == 0, output.decode(errors="replace")[-3000:]
        await asyncio.wait_for(answering.wait(), 10)
        assert answering.returncode == 0
        await node.service.idle()
    finally:
        for peer in peers:
            await stop_peer(peer)


def target(address: str, trunk_port: int) -> str:
    return f"sip:{NUMBER}@carrier.test:{trunk_port};maddr={address}"


@pytest.fixture(autouse=True)
def needs_sipp() -> None:
    if shutil.which("sipp") is None:
        if os.environ.get("UC_EDGE_REQUIRE_SERVICES") == "1":
            pytest.fail("sipp is not installed")
        pytest.skip("sipp is not installed (see ../shared/recipes/sip-peers.md)")


@pytest.mark.parametrize("first_answers_503", [True, False], ids=["503-then-200", "silent-then-200"])
async def test_the_call_fails_over_to_the_second_address_of_the_trunk_name(
    node: tuple[Node, int], tmp_path: Path, first_answers_503: bool
) -> None:
    running, trunk_port = node
    with capture_logs() as logs:
        await call_through(running, trunk_port, tmp_path, first_answers_503)
    (call_id,) = running.calls.started
    attempts = sorted(
        (a.target, a.result, a.sip_status) for a in await running.calls.list_routing_attempts(call_id)
    )
    first = ("failed", 503) if first_answers_503 else ("no_answer", 408)
    assert attempts == [(target(FIRST, trunk_port), *first), (target(SECOND, trunk_port), "answered", 200)]
    session = await running.calls.get_call(call_id)
    assert session is not None and session.answered_at is not None
    assert session.termination_cause == "normal_clearing"
    (line,) = [line for line in logs if line["event"] == "trunk address failed, trying next"]
    assert (line["trunk"], line["address"], line["next_address"]) == ("carrier", FIRST, SECOND)
    assert line["reason"] == ("503" if first_answers_503 else "timeout")
    assert running.registry.get_sample_value("uc_sip_trunk_failovers_total", {"trunk": "carrier"}) == 1
