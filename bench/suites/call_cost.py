"""call-cost: CPU, PostgreSQL round trips and instructions per B2BUA call, in process.

SIPp-like caller and callee scripts are driven in memory through the real transport hub, SIP endpoint
and ``CallControlService`` (no sockets for SIP: a fake UDP transport hands datagrams back on the next
loop turn), with the real PostgreSQL call and CDR repositories. Each call is INVITE/100/180/200/ACK/BYE
with SDP; media is the recording fake (``media=real`` uses the RTP media plane). What it reports:

* ``cpu_us_per_call`` — process CPU time of the measured calls divided by their number (after a warm-up,
  so statement caches and pools are warm); the CPS target of 500 on one core needs ≤ 1,800 µs (the
  server also parses on sockets and runs the outbox relay, which this does not).
* ``pg_round_trips_per_call`` — statements sent to PostgreSQL per call, counted by a subclass of the
  pools' connection class (BEGIN/COMMIT, queries, one ``executemany`` each).
* ``instructions_per_call`` — with ``valgrind=1`` and valgrind on PATH: this module run twice under
  ``valgrind --tool=callgrind`` (``calls`` and three times as many), the difference of the instruction counts
  divided by the difference of calls — deterministic, unlike CPU time on a shared machine.

The calls are checked before they count: every call must end with 200 OK to BYE, and PostgreSQL must hold
an ended ``call_sessions`` row for each one (node id unique to the run).

Run standalone (what the valgrind measurement does)::

    python -m bench.suites.call_cost --calls 300 --warmup 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench.framework import BenchError, Suite, SuiteContext, SuiteResult

DSN = "postgresql://uc_edge:uc_edge@127.0.0.1:5432/"
SERVER = ("127.0.0.1", 5060)
UAC = ("127.0.0.1", 6001)
UAS = ("127.0.0.1", 6002)

SDP_OFFER = (
    "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
)
SDP_ANSWER = (
    "v=0\r\no=callee 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6010 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
)

_round_trips = [0]


def _counting_class() -> type:
    from storage.postgres.connect import PooledConnection

    class CountingConnection(PooledConnection):
        """Counts what is sent to the server: a simple query (BEGIN, COMMIT) or one extended query."""

        __slots__ = ()

        async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:  # noqa: ASYNC109
            if not args:  # with arguments it goes through _execute, counted there
                _round_trips[0] += 1
            status: str = await super().execute(query, *args, timeout=timeout)
            return status

        async def _execute(self, *args: Any, **kwargs: Any) -> Any:
            _round_trips[0] += 1
            return await super()._execute(*args, **kwargs)

        async def _executemany(self, *args: Any, **kwargs: Any) -> Any:
            _round_trips[0] += 1
            return await super()._executemany(*args, **kwargs)

    return CountingConnection


def _parse(data: bytes) -> tuple[str, dict[str, str]]:
    lines = data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = headers[key] + "," + value.strip() if key in headers else value.strip()
    return lines[0], headers


class Peers:
    """Caller and callee scripts; also the hub's UDP transport (``sendto``)."""

    serial = 0

    def __init__(self, hub: Any, calls: int, hold: float) -> None:
        self.hub = hub
        self.hold = hold
        self.loop = asyncio.get_running_loop()
        self.total = calls
        self.started = self.done = self.failed = 0
        self.finished: asyncio.Future[None] = self.loop.create_future()
        self.calls: dict[str, dict[str, str]] = {}

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.loop.call_soon(self.uas if addr[1] == UAS[1] else self.uac, data)

    def close(self) -> None:
        pass

    def deliver(self, data: str, source: tuple[str, int]) -> None:
        from signaling.sip.routing import TransportAddress

        self.loop.call_soon(self.hub.receive, data.encode(), TransportAddress("udp", *source))

    def start_call(self) -> None:
        self.started += 1
        Peers.serial += 1
        n = Peers.serial
        call_id, tag = f"{n}-{uuid.uuid4().hex[:8]}@127.0.0.1", f"uac{n}"
        self.calls[call_id] = {"tag": tag, "state": "inviting"}
        self.deliver(
            f"INVITE sip:bench@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bK-{n}-1;rport\r\nMax-Forwards: 70\r\n"
            f"From: <sip:caller@127.0.0.1>;tag={tag}\r\nTo: <sip:bench@127.0.0.1:5060>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:6001>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(SDP_OFFER)}\r\n\r\n{SDP_OFFER}",
            UAC,
        )

    def _request(self, method: str, call_id: str, cseq: int) -> str:
        state = self.calls[call_id]
        return (
            f"{method} {state['contact']} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bK-{state['tag']}-{method.lower()};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag={state['tag']}\r\nTo: {state['to']}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )

    def uac(self, data: bytes) -> None:
        first, h = _parse(data)
        call_id = h["call-id"]
        state = self.calls.get(call_id)
        if state is None:
            return
        code, method = int(first.split()[1]), h["cseq"].split()[1]
        if method == "INVITE" and code == 200 and state["state"] == "inviting":
            state.update(state="up", to=h["to"], contact=h["contact"].strip("<>").split(">")[0])
            self.deliver(self._request("ACK", call_id, 1), UAC)
            self.loop.call_later(self.hold, self.deliver, self._request("BYE", call_id, 2), UAC)
        elif (method == "INVITE" and code >= 300) or (method == "BYE" and code >= 200):
            self.failed += code != 200
            self.end(call_id)

    def end(self, call_id: str) -> None:
        self.calls.pop(call_id, None)
        self.done += 1
        if self.started < self.total:
            self.start_call()
        elif self.done >= self.total and not self.finished.done():
            self.finished.set_result(None)

    def uas(self, data: bytes) -> None:
        first, h = _parse(data)
        if first.startswith("SIP/2.0"):
            return
        common = f"Via: {h['via']}\r\nFrom: {h['from']}\r\nCall-ID: {h['call-id']}\r\nCSeq: {h['cseq']}\r\n"
        method = first.split()[0]
        if method == "INVITE":
            to = f"{h['to']};tag=uas{h['call-id'][:12]}"
            rr = f"Record-Route: {h['record-route']}\r\n" if "record-route" in h else ""
            contact = "Contact: <sip:callee@127.0.0.1:6002>\r\n"
            self.deliver(
                f"SIP/2.0 180 Ringing\r\n{common}To: {to}\r\n{contact}Content-Length: 0\r\n\r\n", UAS
            )
            self.deliver(
                f"SIP/2.0 200 OK\r\n{common}To: {to}\r\n{rr}{contact}Content-Type: application/sdp\r\n"
                f"Content-Length: {len(SDP_ANSWER)}\r\n\r\n{SDP_ANSWER}",
                UAS,
            )
        elif method == "BYE":
            self.deliver(f"SIP/2.0 200 OK\r\n{common}To: {h['to']}\r\nContent-Length: 0\r\n\r\n", UAS)


async def _no_user(username: str, realm: str) -> None:
    return None  # as a credential cache with a cached miss: the caller is not a local user


@dataclass
class Measured:
    calls: int
    cpu_s: float
    wall_s: float
    round_trips: int
    rows: int


async def measure(
    calls: int, warmup: int, concurrency: int, media_kind: str = "fake", hold: float = 0.02
) -> Measured:
    """Warm up, then run ``calls`` calls and measure them (see the module doc)."""
    from edge.server import tune_gc
    from signaling.callcontrol.call import CallEnvironment
    from signaling.callcontrol.config import CallControlConfig, Trunk
    from signaling.callcontrol.fakes import RecordingMediaControl
    from signaling.callcontrol.router import CallRouter
    from signaling.callcontrol.service import CallControlService
    from signaling.sip.dialog import LocalAddress
    from signaling.sip.endpoint import SipEndpoint
    from signaling.transport.application import SipRouter
    from signaling.transport.hub import SipTransportHub
    from storage.memory.hot import MemoryLocationStore
    from storage.postgres.calls import PgCallRepository
    from storage.postgres.cdr import PgCdrRepository
    from storage.postgres.connect import create_pool

    endpoint = SipEndpoint(local_addresses={"udp": SERVER}, max_transactions=250_000)
    router = SipRouter()
    hub = SipTransportHub(endpoint, application=router)
    trunk = Trunk(name="uas", host=UAS[0], port=UAS[1], prefixes=("",), inbound_sources=("127.0.0.1",))
    config = CallControlConfig(
        domain="127.0.0.1", local_domains=frozenset({"127.0.0.1"}), trunks=(trunk,), require_auth=False
    )
    counting = _counting_class()
    call_pool = await create_pool(DSN + "uc_calls", min_size=0, max_size=10, connection_class=counting)
    cdr_pool = await create_pool(DSN + "uc_cdr", min_size=0, max_size=10, connection_class=counting)
    node = "call-cost-" + uuid.uuid4().hex[:8]
    media: Any
    if media_kind == "real":
        from media.plane import MediaPlane

        media = MediaPlane(
            rtp_port_min=47000, rtp_port_max=47999, bind_address="127.0.0.1", rtp_socket_pool=256
        )
        await media.start()
    else:
        media = RecordingMediaControl(address="127.0.0.1")
    env = CallControlService.environment(
        CallEnvironment(config, {"udp": LocalAddress("UDP", *SERVER)}, timers=endpoint.timers), hub.now
    )
    service = CallControlService(
        hub=hub,
        media=media,
        calls=PgCallRepository(call_pool, node_id=node),
        cdrs=PgCdrRepository(cdr_pool, node_id=node),
        # as the server's credential cache after the first call: it knows the dialled number is not ours
        router=CallRouter(
            config,
            location=MemoryLocationStore(),
            credentials=_no_user,
            known_absent=lambda user, realm: True,
        ),
        env=env,
    )
    service.install(router)
    await service.start()
    tune_gc()  # the server's collector settings (edge/server.py)

    async def run(n: int) -> tuple[float, float, int]:
        if n <= 0:
            return 0.0, 0.0, 0
        peers = Peers(hub, n, hold)
        hub._udp = peers  # type: ignore[assignment]  # the in-memory transport
        trips0, cpu0, wall0 = _round_trips[0], time.process_time(), time.perf_counter()
        for _ in range(min(concurrency, n)):
            peers.start_call()
        await peers.finished
        await service.idle()  # every row written
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        if peers.failed:
            raise BenchError(f"{peers.failed} of {n} calls failed (INVITE or BYE not answered 200)")
        return cpu, wall, _round_trips[0] - trips0

    try:
        await run(warmup)
        cpu, wall, trips = await run(calls)
        conn = await asyncpg.connect(DSN + "uc_calls")
        try:
            rows = await conn.fetchval(
                "SELECT count(*) FROM call_sessions WHERE node_id = $1 AND status = 'ended'", node
            )
        finally:
            await conn.close()
    finally:
        await _drop_unrelayed_events(node)
        await service.stop()
        await hub.stop()
        await call_pool.close()
        await cdr_pool.close()
        if media_kind == "real":
            await media.close()
    if rows != warmup + calls:
        raise BenchError(
            f"PostgreSQL holds {rows} ended call_sessions rows of this run, expected {warmup + calls}"
        )
    return Measured(calls, cpu, wall, trips, rows)


async def _drop_unrelayed_events(node: str) -> None:
    """Delete the outbox rows this run wrote: no relay runs here, so they would stay unsent, and a node
    later started on this machine would first have to publish every event of every bench run to Kafka
    (~13 a call) before its own. The call rows stay, under this run's node id."""
    for database in ("uc_calls", "uc_cdr"):
        conn = await asyncpg.connect(DSN + database)
        try:
            # A row holds one transaction's events, all of one node (this process).
            await conn.execute(
                "DELETE FROM outbox WHERE id IN (SELECT outbox_id FROM outbox_events"
                " WHERE sent_at IS NULL AND envelope->>'node_id' = $1)",
                node,
            )
        finally:
            await conn.close()


def _instructions(calls: int, warmup: int, concurrency: int, media: str, hold: float, workdir: str) -> int:
    """Instructions callgrind counts for a whole standalone run of ``calls`` calls."""
    out = os.path.join(workdir, f"callgrind.{calls}.out")
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m",
        "bench.suites.call_cost", "--calls", str(calls), "--warmup", str(warmup),
        "--concurrency", str(concurrency), "--media", media, "--hold", str(hold),
    ]  # fmt: skip
    cwd = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=cwd, check=False)
    found = re.findall(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not found:
        raise BenchError(f"callgrind run of {calls} calls failed: {done.stderr.strip()[-800:]}")
    return int(found[-1])


async def run(ctx: SuiteContext) -> SuiteResult:
    calls = ctx.param("calls", 300 if ctx.quick else 2000)
    if calls <= 0:
        raise BenchError("calls must be positive")
    warmup = ctx.param("warmup", 20 if ctx.quick else 100)
    concurrency = ctx.param("concurrency", 20)
    media = ctx.param("media", "fake")
    hold = ctx.param("hold_ms", 20.0) / 1000
    valgrind = ctx.param("valgrind", 0)
    vg_calls = ctx.param("valgrind_calls", 100)
    if media not in ("fake", "real"):
        raise BenchError(f"media must be fake or real, not {media!r}")
    from edge.logs import configure_logging

    configure_logging("WARNING", "json")  # the server's per-call info lines would bury the progress bars
    task = ctx.task("calls in process (real PostgreSQL)", total=1)
    m = await measure(calls, warmup, concurrency, media, hold)
    task.advance()
    cpu_us = m.cpu_s / m.calls * 1e6
    ctx.log(
        f"{m.calls} calls: cpu {m.cpu_s:.3f} s, wall {m.wall_s:.3f} s, {m.round_trips} PostgreSQL round trips"
    )
    figures = {
        "cpu_us_per_call": cpu_us,
        "calls_per_cpu_second": 1e6 / cpu_us,
        "pg_round_trips_per_call": m.round_trips / m.calls,
    }
    units = {
        "cpu_us_per_call": "µs",
        "calls_per_cpu_second": "calls/s",
        "pg_round_trips_per_call": "round trips",
    }
    notes = [
        f"{m.calls} calls after {warmup} warm-up calls, {concurrency} at a time, BYE {hold * 1000:g} ms "
        f"after ACK, media {media}, in process "
        "(no SIP sockets, no outbox relay); every call checked answered and ended in call_sessions",
    ]
    if valgrind:
        if shutil.which("valgrind") is None:
            notes.append("valgrind=1 but valgrind is not on PATH: no instruction count")
        else:
            vg = ctx.task("callgrind runs", total=2)
            small = _instructions(vg_calls, warmup, concurrency, media, hold, str(ctx.workdir))
            vg.advance()
            large = _instructions(3 * vg_calls, warmup, concurrency, media, hold, str(ctx.workdir))
            vg.advance()
            figures["instructions_per_call"] = (large - small) / (2 * vg_calls)
            units["instructions_per_call"] = "instructions"
            notes.append(
                f"instructions: callgrind over {vg_calls} and {3 * vg_calls} calls ({small:,} and {large:,})"
            )
    return SuiteResult(
        figures=figures,
        units=units,
        targets={"cpu_us_per_call": 1800.0},
        lower_is_better={"cpu_us_per_call", "pg_round_trips_per_call", "instructions_per_call"}
        & set(figures),
        notes=notes,
    )


SUITE = Suite(
    name="call-cost",
    description="CPU µs, PostgreSQL round trips and instructions per B2BUA call, in process",
    run=run,
    params={
        "calls": "measured calls (default 2000, quick 300)",
        "warmup": "calls before measuring (default 100, quick 20)",
        "concurrency": "calls in progress at once (default 20)",
        "media": "fake (recording MediaControl, default) or real (the RTP media plane)",
        "hold_ms": "ms from ACK to BYE (default 20: a call's setup and teardown are written apart)",
        "valgrind": "1: also count instructions per call under callgrind (slow: ~1 min per 100 calls)",
        "valgrind_calls": "calls of the smaller callgrind run, the larger runs 3x as many (default 100)",
    },
    packages=("asyncpg",),
)


def main() -> None:
    parser = argparse.ArgumentParser(description="in-process B2BUA call cost (see the module doc)")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--media", choices=["fake", "real"], default="fake")
    parser.add_argument("--hold", type=float, default=0.02, help="seconds from ACK to BYE")
    args = parser.parse_args()
    from edge.logs import configure_logging

    configure_logging("WARNING", "json")
    # The server's event loop (edge/cli.py), as under `uc-edge bench run call-cost`: the standalone run is
    # what callgrind counts, and asyncio's own loop costs ~10 % more per call.
    import uvloop

    m = uvloop.run(measure(args.calls, args.warmup, args.concurrency, args.media, args.hold))
    print(
        f"calls={m.calls} cpu={m.cpu_s:.3f}s wall={m.wall_s:.3f}s "
        f"per_call_cpu_us={m.cpu_s / m.calls * 1e6:.0f} "
        f"round_trips_per_call={m.round_trips / m.calls:.2f}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
