"""b2bua-cps: calls per second through the B2BUA on one core (SIPp caller and callee), against Kamailio.

What runs (every process is started here, pinned, and stopped here by its process group):

* a SIPp callee (``bench/peers/cps_uas.xml``: 180, then 200 with an SDP answer; ACK; BYE → 200) on the
  load core;
* ``uc-edge serve`` on its own spare ports, pinned to one core (``taskset -c 1``), with one static trunk
  ``uas`` pointing at the callee (prefix ``""``: every dialled user goes there) that also admits calls from
  127.0.0.1 (no digest on the A leg), flood protection exempting 127.0.0.1, a node id of its own;
* rate steps: a SIPp caller (``bench/peers/cps_uac.xml``: INVITE with SDP, 100/180/200, ACK, ``hold_ms``
  of call without RTP, BYE) on the load core offers each rate for ``step_seconds``. A step is clean when
  SIPp exits 0, every call succeeded and the calls were placed at the offered pace. The highest clean rate
  is ``cps_clean``; the server's CPU % (``/proc``) and SIPp's call-setup time (INVITE → 200, per call via
  ``-trace_rtt``) are recorded per step. Steps stop at the first unclean one;
* diagnostics per step (to say why a step was not clean): SIPp's non-zero ``Failed*`` counters and, from
  ``-trace_counts``, the retransmissions, timeouts and unexpected messages per scenario message; the
  server's responsiveness — an OPTIONS probe every 100 ms from the harness, its round-trip time (event
  loop lag plus the SIP path); and for uc-edge the call-row backlog — calls SIPp has completed whose
  ``call_sessions`` row has not ended yet (the write queue behind the signalling), sampled every 0.5 s;
* PostgreSQL without autovacuum (this development machine): the tables the calls write are vacuumed
  before the steps, so one run's dead rows do not tax the next (with autovacuum on, nothing is done);
* sanity: each step's caller name is unique, and after the steps the server's ``call_sessions`` must hold
  exactly one ended row per call of every clean step — the calls really went through the B2BUA;
* the same steps through Kamailio as a transaction-stateful proxy (``bench/peers/kamailio-proxy.cfg``, one
  UDP worker, ``taskset -c 1``) to a fresh SIPp callee, for the ratio ``uc-edge/kamailio``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench.framework import BenchError, Suite, SuiteContext, SuiteResult, monotonic
from bench.suites._sip_load import (
    CLOCK_TICKS,
    LOAD_CORE,
    ROOT,
    SERVER_CORE,
    SOCKET_BUFFER,
    cpu_seconds,
    free_port,
    group_pids,
    kamailio,
    last_stat_row,
    parse_rates,
    pinned,
    report_server_errors,
    run_sipp_client,
    sipp_load_command,
    stand_ins_on_load_core,
    stop_group,
    uc_edge_serve,
)

PEERS = ROOT / "bench" / "peers"
UAC_SCENARIO = PEERS / "cps_uac.xml"
UAS_SCENARIO = PEERS / "cps_uas.xml"
KAMAILIO_CFG = PEERS / "kamailio-proxy.cfg"
CALLS_DSN = "postgresql://uc_edge:uc_edge@127.0.0.1:5432/uc_calls"
TARGET_CPS = 500.0
DEFAULT_RATES = "50,100,150,200,250,300,350,400,450,500,600,750,1000,1500,2000,3000,4000,6000"
QUICK_RATES = "50,100,200,300,500,750,1000,1500"
CALLEE = "bench"
# A step may end 5 % + 2 s after calls/rate + hold: SIPp's start-up, the last call's setup and BYE;
# and calls must be answered at >= 90 % of the offered rate (first to last 200), or the server is only
# building a backlog that a longer step would turn into failures.
PACE_TOLERANCE, PACE_SLACK_SECONDS = 1.05, 2.0
ANSWER_RATE_FRACTION = 0.9
IDLE_SECONDS = 3.0
SETTLE_STALL_SECONDS, SETTLE_LIMIT_SECONDS = 15.0, 240.0
WARMUP_CALLS, WARMUP_RATE = 100, 50


# --- processes --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def sipp_callee(workdir: Path, label: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The SIPp callee on the load core, on a fresh port, for as long as the block runs."""
    port = free_port()
    rundir = workdir / f"uas-{label}"
    rundir.mkdir(exist_ok=True)
    log = open(rundir / "sipp-uas.log", "w")  # closed in finally
    process = subprocess.Popen(
        pinned(
            LOAD_CORE,
            [
                shutil.which("sipp") or "sipp",
                "-sf",
                str(UAS_SCENARIO),
                "-i",
                "127.0.0.1",
                "-p",
                str(port),
                "-nostdin",
                "-buff_size",
                str(SOCKET_BUFFER),
                "-trace_err",
                "-error_file",
                str(rundir / "uas-errors.log"),
            ],
        ),
        cwd=rundir,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    try:
        time.sleep(0.5)  # SIPp binds at once; a probe would count as an unexpected call
        if process.poll() is not None:
            raise BenchError(f"the SIPp callee exited: {(rundir / 'sipp-uas.log').read_text()[-1500:]}")
        yield process, port
    finally:
        stop_group(process, grace=5)
        log.close()


@contextlib.contextmanager
def uc_edge_b2bua(
    workdir: Path, callee_port: int, node_id: str, overload_control: bool = True
) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    sip_port, http_port = free_port(), free_port()
    trunk = {
        "name": "uas",
        "host": "127.0.0.1",
        "port": callee_port,
        "prefixes": [""],
        "inbound_sources": ["127.0.0.1"],
    }
    settings = {
        "UC_EDGE_SIP_UDP_PORT": str(sip_port),
        "UC_EDGE_SIP_TCP_PORT": str(sip_port),
        "UC_EDGE_HTTP_PORT": str(http_port),
        "UC_EDGE_CALL_REQUIRE_AUTH": "false",
        "UC_EDGE_SIP_TRUNKS": json.dumps([trunk]),
        "UC_EDGE_FLOOD_EXEMPT_SOURCES": "127.0.0.1",
        "UC_EDGE_LOG_LEVEL": "WARNING",
        "UC_EDGE_LOG_FORMAT": "json",
        "UC_EDGE_NODE_ID": node_id,
        "UC_EDGE_OVERLOAD_CONTROL": "true" if overload_control else "false",
    }
    with uc_edge_serve(workdir, settings) as process:
        yield process, sip_port, http_port


@contextlib.contextmanager
def kamailio_proxy(workdir: Path, callee_port: int) -> Iterator[tuple[subprocess.Popen[str], int]]:
    defines = [f'TARGET="sip:127.0.0.1:{callee_port}"']
    with kamailio(workdir, KAMAILIO_CFG, shm_mb=4096, defines=defines) as (process, port):
        yield process, port


# --- SIPp caller ------------------------------------------------------------------------------------------


@dataclass
class CallStep:
    rate: int
    calls: int
    hold_seconds: float
    caller: str  # the From user of every call of this step
    created: int
    successful: int
    failed: int
    retransmissions: int
    exit_code: int
    wall_seconds: float
    sipp_seconds: float
    cpu_percent: float
    others_on_core_percent: float  # the server core's busy time not spent by the server (shared machine)
    setup_ms: list[float]  # INVITE sent -> 200 received, one per call SIPp traced
    answered_at: list[float]  # seconds since SIPp started when each 200 arrived
    load_average: float = 0.0
    refused: int = 0  # calls the server answered 503 (overload control), which SIPp counts as successful
    detail: str = ""
    failures: dict[str, int] = field(default_factory=dict)  # SIPp's non-zero Failed*(C) counters
    message_trouble: dict[str, int] = field(default_factory=dict)  # -trace_counts: retrans/timeout/unexp
    probe_ms: list[float] = field(default_factory=list)  # OPTIONS round trips during the step
    probes_lost: int = 0
    backlog: list[int] = field(default_factory=list)  # completed calls whose row had not ended, sampled
    gc_pauses: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # gen -> (n, s, n > 0.1 s)
    database_cpu_percent: float = 0.0  # every local PostgreSQL process over the step (both cores)

    def diagnosis(self) -> str:
        """One line: what SIPp saw go wrong, how responsive the server was, how far its rows trailed."""
        probe = (
            f"OPTIONS probe p50 {percentile(self.probe_ms, 0.5):.1f} ms "
            f"p99 {percentile(self.probe_ms, 0.99):.1f} ms "
            f"max {max(self.probe_ms, default=0.0):.1f} ms, {self.probes_lost} unanswered"
        )
        parts = [probe]
        if self.backlog:
            parts.append(f"row backlog max {max(self.backlog)} (last {self.backlog[-1]})")
        if self.gc_pauses:
            parts.append(
                "garbage collections "
                + ", ".join(
                    f"gen{gen} {n:.0f} ({total * 1000:.0f} ms, {slow:.0f} over 100 ms)"
                    for gen, (n, total, slow) in sorted(self.gc_pauses.items())
                    if n
                )
            )
        if self.failures:
            parts.append("failed: " + ", ".join(f"{k} {v}" for k, v in self.failures.items()))
        if self.message_trouble:
            parts.append("per message: " + ", ".join(f"{k} {v}" for k, v in self.message_trouble.items()))
        return "; ".join(parts)

    @property
    def achieved_rate(self) -> float:
        """Calls answered per second between the first and the last 200 (SIPp's own clock)."""
        if len(self.answered_at) < 2:
            return 0.0
        span = max(self.answered_at) - min(self.answered_at)
        return (len(self.answered_at) - 1) / span if span > 0 else 0.0

    @property
    def cpu_ms_per_call(self) -> float:
        return self.cpu_percent / 100 / self.rate * 1000

    @property
    def database_ms_per_call(self) -> float:
        return self.database_cpu_percent / 100 / self.rate * 1000

    @property
    def complete(self) -> bool:
        return (
            self.exit_code == 0 and self.failed == 0 and self.refused == 0 and self.successful == self.calls
        )

    @property
    def clean(self) -> bool:
        """Complete, placed at the offered pace (not throttled by SIPp's outstanding-call limit) and
        answered at (nearly) that pace."""
        ideal = self.calls / self.rate + self.hold_seconds
        return (
            self.complete
            and self.wall_seconds <= ideal * PACE_TOLERANCE + PACE_SLACK_SECONDS
            and (self.calls < 10 or self.achieved_rate >= self.rate * ANSWER_RATE_FRACTION)
        )

    def why_not_clean(self) -> str:
        """Which of :attr:`clean`'s conditions failed, in words (SIPp's own output when it failed)."""
        if self.refused and self.exit_code == 0 and self.failed == 0:
            return f"{self.refused} calls refused with 503 (overload control)"
        if not self.complete:
            return self.detail.strip()[:800] or f"sipp exit {self.exit_code}, {self.failed} failed"
        ideal = self.calls / self.rate + self.hold_seconds
        reasons = []
        if self.wall_seconds > ideal * PACE_TOLERANCE + PACE_SLACK_SECONDS:
            reasons.append(f"SIPp took {self.wall_seconds:.1f} s for a {ideal:.1f} s step (calls held back)")
        if self.calls >= 10 and self.achieved_rate < self.rate * ANSWER_RATE_FRACTION:
            share = f"{ANSWER_RATE_FRACTION:.0%} of {self.rate}/s"
            reasons.append(f"200s arrived at {self.achieved_rate:.0f}/s, under {share}")
        return "; ".join(reasons)

    def setup_percentile(self, fraction: float) -> float:
        return percentile(self.setup_ms, fraction)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


def read_setup_times(directory: Path) -> tuple[list[float], list[float]]:
    """Counter 1 (INVITE → 200) of SIPp's ``-trace_rtt`` file(s): (response times in ms, seconds since
    SIPp's start at which each 200 arrived)."""
    times: list[float] = []
    arrivals: list[float] = []
    for path in directory.glob("*_rtt.csv"):
        with open(path, newline="") as handle:
            for row in csv.reader(handle, delimiter=";"):
                if len(row) >= 3 and row[2].strip() == "1":
                    with contextlib.suppress(ValueError):
                        arrival, elapsed = float(row[0]) / 1000, float(row[1])
                        times.append(elapsed)
                        arrivals.append(arrival)
    return times, arrivals


def core_busy_seconds(core: str) -> tuple[float, float]:
    """(busy, total) CPU seconds of one core so far, from /proc/stat."""
    with open("/proc/stat") as handle:
        for line in handle:
            if line.startswith(f"cpu{core} "):
                ticks = [int(v) for v in line.split()[1:]]
                idle = ticks[3] + ticks[4]  # idle + iowait
                return (sum(ticks[:8]) - idle) / CLOCK_TICKS, sum(ticks[:8]) / CLOCK_TICKS
    return 0.0, 0.0


def postgres_cpu_seconds() -> float:
    """User + system CPU seconds of every local PostgreSQL process so far, the postmaster's exited children
    included (their time moves to its cutime/cstime). Read from /proc: the database is not ours to pin or
    stop, but on a machine this size it shares the cores with the server, and its cost per call is part
    of what a call costs. 0 where PostgreSQL runs elsewhere."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry.name}/stat") as handle:
                text = handle.read()
            if text[text.index("(") + 1 : text.rindex(")")] != "postgres":
                continue
            fields = text[text.rindex(")") + 2 :].split()
            total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return total / CLOCK_TICKS


def message_trouble(directory: Path) -> dict[str, int]:
    """The non-zero retransmission/timeout/unexpected counters per scenario message (``-trace_counts``,
    last row), e.g. ``{"0_INVITE_Retrans": 12, "3_200_Timeout": 1}``."""
    found: dict[str, int] = {}
    for path in directory.glob("*_counts.csv"):
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle, delimiter=";") if row]
        if len(rows) < 2:
            continue
        for name, value in zip(rows[0], rows[-1], strict=False):
            if name.endswith(("_Retrans", "_Timeout", "_Unexp")) and value.strip().isdigit() and int(value):
                found[name] = found.get(name, 0) + int(value)
    return found


class OptionsProbe:
    """An OPTIONS to the server every ``interval`` seconds from a socket of its own; the round trips (ms)
    say how quickly the server's event loop gets to a new request while the load runs."""

    def __init__(self, port: int, interval: float = 0.1, timeout: float = 2.0) -> None:
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.round_trips: list[float] = []
        self.lost = 0
        self._sent: dict[str, float] = {}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        probe = self

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
                for line in data.split(b"\r\n"):
                    if line.lower().startswith(b"call-id:"):
                        sent = probe._sent.pop(line.split(b":", 1)[1].strip().decode(), None)
                        if sent is not None:
                            probe.round_trips.append((monotonic() - sent) * 1000)

        transport, _ = await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
        local_port = transport.get_extra_info("sockname")[1]
        try:
            while True:
                now = monotonic()
                self.lost += sum(1 for t in self._sent.values() if now - t > self.timeout)
                self._sent = {k: t for k, t in self._sent.items() if now - t <= self.timeout}
                call_id = uuid.uuid4().hex
                self._sent[call_id] = now
                transport.sendto(
                    (
                        f"OPTIONS sip:127.0.0.1:{self.port} SIP/2.0\r\n"
                        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{call_id[:16]};rport\r\n"
                        "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=probe\r\n"
                        f"To: <sip:probe@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
                        "Content-Length: 0\r\n\r\n"
                    ).encode(),
                    ("127.0.0.1", self.port),
                )
                await asyncio.sleep(self.interval)
        finally:
            transport.close()


BACKLOG_SETTLED_AFTER = 30.0  # s: a call's row ends within this of its start, or counts as backlog for good
BACKLOG_ADVANCE = 10.0  # s of rows folded into the settled count at a time


async def watch_backlog(node_id: str, caller: str, stat: Path, samples: list[int]) -> None:
    """Every 0.5 s: calls SIPp reports completed (its stat file, refused ones not) minus this caller's ended
    call rows.

    Each poll reads only the last ~30-40 s of rows (the started_at index): rows older than that are folded,
    10 s at a time and once, into a settled count (a call of this bench ends within seconds, so one older
    and not ended yet stays counted as backlog). Counting every row of the step took ~60 ms of PostgreSQL
    per poll at 60,000 rows (two parallel workers forked per query), twice a second: CPU on the cores the
    server shares, which a 2-minute step at 500 calls/s then charged to the calls. Parallel workers are
    off on this connection for the same reason."""
    conn = await asyncpg.connect(CALLS_DSN)
    await conn.execute("SET max_parallel_workers_per_gather = 0")
    pattern = f"%:{caller}@%"
    query = (
        "SELECT count(*) FROM call_sessions WHERE started_at >= $3 AND ($4::timestamptz IS NULL OR"
        " started_at < $4) AND node_id = $1 AND from_uri LIKE $2 AND status = 'ended'"
    )
    # the server's clock, with 5 s of slack; the horizon's age is kept on this process's clock
    horizon = await conn.fetchval("SELECT now() - interval '5 seconds'")
    horizon_set = monotonic() - 5.0
    settled = 0
    try:
        while True:
            await asyncio.sleep(0.5)
            row = last_stat_row(stat)
            # Calls refused with 503 end "successfully" for SIPp but have no row.
            completed = int(row.get("SuccessfulCall(C)", 0) or 0) - int(row.get("GenericCounter1(C)", 0) or 0)
            while monotonic() - horizon_set > BACKLOG_SETTLED_AFTER + BACKLOG_ADVANCE:
                folded_until = horizon + dt.timedelta(seconds=BACKLOG_ADVANCE)
                settled += int(await conn.fetchval(query, node_id, pattern, horizon, folded_until))
                horizon, horizon_set = folded_until, horizon_set + BACKLOG_ADVANCE
            recent = int(await conn.fetchval(query, node_id, pattern, horizon, None))
            samples.append(max(0, completed - settled - recent))
    finally:
        await conn.close()


def _gc_pause_totals(http_port: int) -> dict[str, tuple[float, float, float]]:
    """``uc_gc_pause_seconds`` from the server's /metrics: generation -> (collections, seconds, collections
    over 100 ms)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found: dict[str, list[float]] = {}
    for line in text.splitlines():
        match = _GC_LINE.match(line)
        if match is None:
            continue
        kind, labels, value = match.groups()
        generation = _GC_GENERATION.search(labels)
        if generation is None:
            continue
        totals = found.setdefault(generation.group(1), [0.0, 0.0, 0.0, 0.0])
        if kind == "count":
            totals[0] = float(value)
        elif kind == "sum":
            totals[1] = float(value)
        elif 'le="0.1"' in labels:
            totals[3] = float(value)
    return {gen: (n, total, n - under) for gen, (n, total, _, under) in found.items()}


_GC_LINE = re.compile(r"uc_gc_pause_seconds_(count|sum|bucket)\{([^}]*)\} (\S+)")
_GC_GENERATION = re.compile(r'generation="(\d)"')


def _minus(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float, float]:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


async def gc_pause_totals(http_port: int | None) -> dict[str, tuple[float, float, float]]:
    if http_port is None:
        return {}
    try:
        return await asyncio.to_thread(_gc_pause_totals, http_port)
    except OSError:
        return {}


async def run_caller(
    target_port: int,
    rate: int,
    calls: int,
    hold_ms: int,
    caller: str,
    server_pids: Sequence[int],
    workdir: Path,
    node_id: str | None = None,
    http_port: int | None = None,
) -> CallStep:
    """Offer ``calls`` calls at ``rate``/s; the server's CPU % over the same interval (and, with
    ``node_id``, the backlog of its call rows; with ``http_port``, its garbage-collection pauses)."""
    stepdir = workdir / f"uac-{caller}"
    stepdir.mkdir()
    stat = stepdir / "stat.csv"
    errors = stepdir / "errors.log"
    hold = hold_ms / 1000
    limit = max(200, int(rate * (hold + 2)))
    timeout = calls / rate * 2 + hold + 20
    command = sipp_load_command(
        UAC_SCENARIO,
        f"127.0.0.1:{target_port}",
        scenario_args=["-set", "hold", str(hold_ms), "-set", "caller", caller, "-s", CALLEE],
        local_port=free_port(),
        rate=rate,
        calls=calls,
        limit=limit,
        timeout=timeout,
        stat=stat,
        errors=errors,
        trace_args=["-trace_rtt", "-rtt_freq", "100", "-trace_counts"],
    )
    gc_before = await gc_pause_totals(http_port)
    core_before = core_busy_seconds(SERVER_CORE)
    database_before = postgres_cpu_seconds() if node_id is not None else 0.0
    probes = OptionsProbe(target_port)
    backlog: list[int] = []
    monitors = [asyncio.ensure_future(probes.run())]
    if node_id is not None:
        monitors.append(asyncio.ensure_future(watch_backlog(node_id, caller, stat, backlog)))
    try:
        run = await run_sipp_client(
            command, cwd=stepdir, sipp_timeout=timeout, stat=stat, errors=errors, server_pids=server_pids
        )
    finally:
        for monitor in monitors:
            monitor.cancel()
        await asyncio.gather(*monitors, return_exceptions=True)
    core_after = core_busy_seconds(SERVER_CORE)
    database_seconds = postgres_cpu_seconds() - database_before if node_id is not None else 0.0
    gc_after = await gc_pause_totals(http_port)
    gc_pauses = {gen: _minus(after, gc_before.get(gen, (0.0, 0.0, 0.0))) for gen, after in gc_after.items()}
    core_total = core_after[1] - core_before[1]
    core_busy = (core_after[0] - core_before[0]) / core_total * 100 if core_total > 0 else 0.0
    setup_ms, answered_at = read_setup_times(stepdir)
    return CallStep(
        rate=rate,
        calls=calls,
        hold_seconds=hold,
        caller=caller,
        created=run.counter("TotalCallCreated"),
        successful=run.counter("SuccessfulCall(C)"),
        failed=run.counter("FailedCall(C)"),
        refused=run.counter("GenericCounter1(C)"),
        retransmissions=run.counter("Retransmissions(C)"),
        exit_code=run.exit_code,
        wall_seconds=run.wall_seconds,
        sipp_seconds=run.sipp_seconds,
        cpu_percent=run.cpu_percent,
        others_on_core_percent=max(0.0, core_busy - run.cpu_percent),
        database_cpu_percent=database_seconds / run.wall_seconds * 100 if run.wall_seconds > 0 else 0.0,
        setup_ms=setup_ms,
        answered_at=answered_at,
        load_average=os.getloadavg()[0],
        detail=run.detail,
        failures={
            k: v
            for k, v in (
                (k, run.counter(k)) for k in run.stats if k.startswith("Failed") and k.endswith("(C)")
            )
            if v
        },
        message_trouble=message_trouble(stepdir),
        probe_ms=probes.round_trips,
        probes_lost=probes.lost,
        backlog=backlog,
        gc_pauses=gc_pauses,
    )


async def rate_steps(
    ctx: SuiteContext,
    label: str,
    target_port: int,
    rates: Sequence[int],
    step_seconds: float,
    hold_ms: int,
    server_pids: Sequence[int],
    run_tag: str,
    node_id: str | None = None,
    http_port: int | None = None,
) -> list[CallStep]:
    task = ctx.task(f"{label}: rate steps", total=len(rates))
    results: list[CallStep] = []
    for index, rate in enumerate(rates):
        calls = max(1, int(rate * step_seconds))
        # The step's number too: a rate offered twice (a soak, --param rates=150,150) gets a directory of
        # its own.
        caller = f"{run_tag}{label[:3]}s{index}r{rate}"
        step = await run_caller(
            target_port, rate, calls, hold_ms, caller, server_pids, ctx.workdir, node_id, http_port
        )
        results.append(step)
        task.advance()
        ctx.log(
            f"{label} {rate} calls/s: {step.successful - step.refused}/{step.calls} ok, "
            f"{step.failed} failed, "
            + (f"{step.refused} refused (503), " if step.refused else "")
            + f"{step.retransmissions} retransmissions, achieved {step.achieved_rate:.0f}/s, "
            f"server CPU {step.cpu_percent:.0f}% ({step.cpu_ms_per_call:.2f} ms per call; other processes "
            f"used {step.others_on_core_percent:.0f}% of core {SERVER_CORE}"
            + (
                f"; PostgreSQL {step.database_cpu_percent:.0f}%, "
                f"{step.database_ms_per_call:.2f} ms per call), "
                if step.database_cpu_percent > 0
                else "), "
            )
            + f"setup p50 {step.setup_percentile(0.5):.0f} ms "
            f"p99 {step.setup_percentile(0.99):.0f} ms, sipp exit {step.exit_code}, "
            f"machine load average {step.load_average:.2f}; {step.diagnosis()}"
            + ("" if step.clean else f" — not clean: {step.why_not_clean()}")
        )
        if not step.clean:
            break
        await asyncio.sleep(hold_ms / 1000 + 1.0)  # let the last calls and transactions finish
    task.finish()
    return results


async def past_capacity_step(
    ctx: SuiteContext,
    port: int,
    rate: int,
    step_seconds: float,
    hold_ms: int,
    server_pids: Sequence[int],
    run_tag: str,
    node_id: str,
    http_port: int,
) -> CallStep:
    """One step offered well above the clean rate: what overload control keeps carried and on time."""
    calls = max(1, int(rate * step_seconds))
    step = await run_caller(
        port, rate, calls, hold_ms, f"{run_tag}over", server_pids, ctx.workdir, node_id, http_port
    )
    ctx.log(
        f"uc-edge past capacity, {rate} calls/s offered: carried {step.achieved_rate:.0f}/s "
        f"({step.successful - step.refused} calls), {step.refused} refused (503), {step.failed} failed, "
        f"{step.retransmissions} retransmissions, setup p50 {step.setup_percentile(0.5):.0f} ms "
        f"p99 {step.setup_percentile(0.99):.0f} ms, server CPU {step.cpu_percent:.0f}%; {step.diagnosis()}"
    )
    return step


async def idle_cpu_percent(pids: Sequence[int]) -> float:
    """The server's CPU % with no calls up (timers, housekeeping, outbox relay), over ``IDLE_SECONDS``."""
    before, started = cpu_seconds(pids), monotonic()
    await asyncio.sleep(IDLE_SECONDS)
    return (cpu_seconds(pids) - before) / (monotonic() - started) * 100


def highest_clean(steps: Sequence[CallStep]) -> CallStep | None:
    clean = [s for s in steps if s.clean]
    return max(clean, key=lambda s: s.rate) if clean else None


# --- sanity: the calls went through the B2BUA ---------------------------------------------------------------


EVENTS_DRAIN_LIMIT_SECONDS = 180.0


async def wait_for_events(ctx: SuiteContext, node_id: str) -> float | None:
    """Keep the server up until its relay has published every event of this run (calls and CDRs), so no
    unsent rows are left for the next node on the machine; seconds it took, None past the limit."""
    started = monotonic()
    while True:
        unsent = 0
        for database in ("uc_calls", "uc_cdr"):
            conn = await asyncpg.connect(CALLS_DSN.rsplit("/", 1)[0] + "/" + database)
            try:
                unsent += await conn.fetchval(
                    "SELECT count(*) FROM outbox_events WHERE sent_at IS NULL AND envelope->>'node_id' = $1",
                    node_id,
                )
            finally:
                await conn.close()
        if unsent == 0:
            return monotonic() - started
        if monotonic() - started > EVENTS_DRAIN_LIMIT_SECONDS:
            ctx.log(f"{unsent} events of this run still unsent after {EVENTS_DRAIN_LIMIT_SECONDS:.0f} s")
            return None
        await asyncio.sleep(0.5)


async def check_call_rows(ctx: SuiteContext, node_id: str, steps: Sequence[CallStep]) -> tuple[int, float]:
    """Wait for the server's rows to settle; every clean step's calls must be there, ended, exactly once.

    The B2BUA writes its rows behind the signalling (a queue per call), so under load they lag: this
    waits while the rows still change (at most ``SETTLE_LIMIT_SECONDS``) and returns (rows written by
    this run's server, seconds from the end of the last step until every row had ended).
    """
    conn = await asyncpg.connect(CALLS_DSN)
    started = last_change = monotonic()
    previous: dict[tuple[str, str], int] = {}
    try:
        while True:
            rows = await conn.fetch(
                "SELECT split_part(split_part(from_uri, '@', 1), ':', 2) AS caller, status, count(*) AS n"
                " FROM call_sessions WHERE node_id = $1 GROUP BY 1, 2",
                node_id,
            )
            counts: dict[tuple[str, str], int] = {(r["caller"], r["status"]): r["n"] for r in rows}
            now = monotonic()
            if counts != previous:
                previous, last_change = counts, now
            settled = all(
                counts.get((s.caller, "ended"), 0) >= s.successful for s in steps if s.clean
            ) and not any(status in ("initiated", "answered") for _, status in counts)
            if settled or now - last_change > SETTLE_STALL_SECONDS or now - started > SETTLE_LIMIT_SECONDS:
                break
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    lag = monotonic() - started
    total = sum(counts.values())
    open_rows = sum(n for (_, status), n in counts.items() if status in ("initiated", "answered"))
    if not settled:
        ctx.log(f"call_sessions still had {open_rows} open rows {lag:.0f} s after the last step")
    for step in steps:
        if not step.clean:
            continue
        mine = {status: n for (caller, status), n in counts.items() if caller == step.caller}
        if sum(mine.values()) != step.calls or (settled and mine != {"ended": step.calls}):
            raise BenchError(
                f"uc-edge step {step.rate}/s: SIPp completed {step.calls} calls but call_sessions holds "
                f"{mine or 'no rows'} for caller {step.caller} (node {node_id})"
            )
    ctx.log(
        f"call_sessions: {total} rows written by node {node_id}; every clean step has one row per call"
        + (f", all ended {lag:.1f} s after the last step" if settled else f"; {open_rows} still open")
    )
    return total, lag if settled else float("inf")


# --- the suite --------------------------------------------------------------------------------------------


# The tables every call writes (call rows are inserted then updated; outbox rows, one per transaction,
# inserted, leased and deleted), by database.
WRITTEN_TABLES = {
    "uc_calls": ("call_sessions", "call_legs", "call_routing", "outbox"),
    "uc_cdr": ("cdr_records", "outbox"),
}


async def vacuum_where_autovacuum_is_off() -> str:
    """``VACUUM (ANALYZE)`` the tables the calls write when the server runs without autovacuum (as this
    development machine's does): earlier runs' dead row versions otherwise pile up, and PostgreSQL's CPU
    per call grows from run to run (1.6 ms after a vacuum, 5 ms before one, measured at 200 calls/s).
    With autovacuum on, the server keeps them in check itself. Returns what was vacuumed ('' if nothing)."""
    done: list[str] = []
    for database, tables in WRITTEN_TABLES.items():
        conn = await asyncpg.connect(CALLS_DSN.rsplit("/", 1)[0] + "/" + database)
        try:
            if await conn.fetchval("SELECT current_setting('autovacuum') = 'on'"):
                return ""
            for table in tables:
                await conn.execute(f"VACUUM (ANALYZE) {table}")
            done.append(f"{database} ({', '.join(tables)})")
        finally:
            await conn.close()
    return "; ".join(done)


async def run(ctx: SuiteContext) -> SuiteResult:
    if shutil.which("sipp") is None:
        raise BenchError("sipp is not installed (apt-get install sip-tester)")
    step_seconds = ctx.param("step_seconds", 3.0 if ctx.quick else 10.0)
    rates = parse_rates(ctx.param("rates", QUICK_RATES if ctx.quick else DEFAULT_RATES))
    hold_ms = ctx.param("hold_ms", 1000)
    with_kamailio = ctx.param("kamailio", True)
    overload_control = ctx.param("overload_control", True)
    overload_factor = float(ctx.param("overload_factor", 2.0))
    if step_seconds <= 0 or step_seconds > 120:
        raise BenchError("--param step_seconds must be within (0, 120]")
    if hold_ms < 0 or hold_ms > 60_000:
        raise BenchError("--param hold_ms must be within 0..60000")

    run_tag = "cps" + uuid.uuid4().hex[:6]
    node_id = f"bench-{run_tag}"
    result = SuiteResult(x_label="offered rate (calls/s)")
    vacuumed = await vacuum_where_autovacuum_is_off()
    if vacuumed:
        ctx.log(f"PostgreSQL runs without autovacuum: vacuumed {vacuumed} before the steps")

    # Both servers run with the Kafka and S3 stand-ins off their core (see stand_ins_on_load_core).
    with stand_ins_on_load_core() as stand_ins:
        ctx.log(f"Kafka and S3 stand-ins: {stand_ins}")
        with sipp_callee(ctx.workdir, "uc-edge") as (_, callee_port):
            b2bua = uc_edge_b2bua(ctx.workdir, callee_port, node_id, overload_control)
            with b2bua as (server, port, http_port):
                warm = await run_caller(
                    port, WARMUP_RATE, WARMUP_CALLS, hold_ms, f"{run_tag}warm", [server.pid], ctx.workdir
                )
                if not warm.complete:
                    raise BenchError(f"uc-edge did not carry the warm-up calls cleanly: {warm.detail[:1500]}")
                await asyncio.sleep(hold_ms / 1000 + 1.0)
                idle_cpu = await idle_cpu_percent([server.pid])
                ctx.log(f"uc-edge idle (no calls, after the warm-up): {idle_cpu:.1f}% of one core")
                uc_steps = await rate_steps(
                    ctx,
                    "uc-edge",
                    port,
                    rates,
                    step_seconds,
                    hold_ms,
                    [server.pid],
                    run_tag,
                    node_id,
                    http_port,
                )
                overload_step: CallStep | None = None
                clean_before = highest_clean(uc_steps)
                if overload_control and overload_factor > 0 and clean_before is not None:
                    await asyncio.sleep(hold_ms / 1000 + 1.0)
                    overload_step = await past_capacity_step(
                        ctx,
                        port,
                        round(clean_before.rate * overload_factor),
                        step_seconds,
                        hold_ms,
                        [server.pid],
                        run_tag,
                        node_id,
                        http_port,
                    )
                if server.poll() is not None:
                    raise BenchError("uc-edge exited during the run (see its log in the workdir)")
                rows, settle_lag = await check_call_rows(ctx, node_id, [warm, *uc_steps])
                events_lag = await wait_for_events(ctx, node_id)
        report_server_errors(ctx, ctx.workdir / "uc-edge.log")

        kam_steps: list[CallStep] = []
        if with_kamailio:
            with sipp_callee(ctx.workdir, "kamailio") as (_, callee_port):
                with kamailio_proxy(ctx.workdir, callee_port) as (kamailio, kam_port):
                    pids = group_pids(kamailio.pid)
                    kam_steps = await rate_steps(
                        ctx, "kamailio", kam_port, rates, step_seconds, hold_ms, pids, run_tag
                    )

    best = highest_clean(uc_steps)
    result.figures["cps_clean"] = float(best.rate) if best else 0.0
    result.targets["cps_clean"] = TARGET_CPS
    result.figures["call_sessions_rows"] = float(rows)
    result.figures["server_idle_cpu"] = idle_cpu
    if settle_lag != float("inf"):
        result.figures["call_rows_settled_after"] = settle_lag
        if events_lag is not None:
            result.figures["events_published_after"] = events_lag
            result.units["events_published_after"] = "s"
            result.lower_is_better.add("events_published_after")
        result.units["call_rows_settled_after"] = "s"
        result.lower_is_better.add("call_rows_settled_after")
    else:
        result.notes.append(
            f"call_sessions rows had not all ended {SETTLE_LIMIT_SECONDS:g} s after the last step: "
            "persistence fell behind the signalling."
        )
    result.units["server_idle_cpu"] = "% of one core"
    result.units.update({"cps_clean": "calls/s", "call_sessions_rows": "rows"})
    if best is not None:
        result.figures["server_cpu_at_clean_rate"] = best.cpu_percent
        result.figures["server_cpu_ms_per_call"] = best.cpu_ms_per_call
        result.figures["other_load_on_server_core"] = best.others_on_core_percent
        if best.database_cpu_percent > 0:
            result.figures["postgres_cpu_ms_per_call"] = best.database_ms_per_call
            result.units["postgres_cpu_ms_per_call"] = "ms CPU"
        result.figures["setup_p50_at_clean_rate"] = best.setup_percentile(0.5)
        result.figures["setup_p99_at_clean_rate"] = best.setup_percentile(0.99)
        result.units.update(
            {
                "server_cpu_at_clean_rate": "% of one core",
                "server_cpu_ms_per_call": "ms CPU",
                "other_load_on_server_core": "% of one core",
                "setup_p50_at_clean_rate": "ms",
                "setup_p99_at_clean_rate": "ms",
            }
        )
        result.lower_is_better.update({"setup_p50_at_clean_rate", "setup_p99_at_clean_rate"})
    add_series(result, "uc-edge", uc_steps)
    if overload_step is not None:
        o = overload_step
        result.figures.update(
            {
                "past_capacity_offered": float(o.rate),
                "past_capacity_carried": o.achieved_rate,
                "past_capacity_refused": float(o.refused),
                "past_capacity_failed": float(o.failed),
                "past_capacity_retransmissions": float(o.retransmissions),
                "past_capacity_setup_p50": o.setup_percentile(0.5),
                "past_capacity_setup_p99": o.setup_percentile(0.99),
            }
        )
        result.units.update(
            {
                "past_capacity_offered": "calls/s",
                "past_capacity_carried": "calls/s",
                "past_capacity_refused": "calls",
                "past_capacity_failed": "calls",
                "past_capacity_retransmissions": "messages",
                "past_capacity_setup_p50": "ms",
                "past_capacity_setup_p99": "ms",
            }
        )
        result.lower_is_better.update(
            {
                "past_capacity_failed",
                "past_capacity_retransmissions",
                "past_capacity_setup_p50",
                "past_capacity_setup_p99",
            }
        )
        result.notes.append(
            f"Past capacity: one more step at {overload_factor:g}x the highest clean rate. Carried = "
            "the 200s' rate; with overload control the rest should be refused with 503 at once, not "
            "retransmitted and carried late (--param overload_control=false skips this step, and its "
            "first unclean step shows that collapse)."
        )
    if kam_steps:
        kam_best = highest_clean(kam_steps)
        result.figures["kamailio_cps_clean"] = float(kam_best.rate) if kam_best else 0.0
        result.units["kamailio_cps_clean"] = "calls/s"
        if kam_best is not None:
            result.figures["kamailio_setup_p99_at_clean_rate"] = kam_best.setup_percentile(0.99)
            result.figures["kamailio_cpu_ms_per_call"] = kam_best.cpu_ms_per_call
            result.units["kamailio_setup_p99_at_clean_rate"] = "ms"
            result.units["kamailio_cpu_ms_per_call"] = "ms CPU"
            result.lower_is_better.add("kamailio_setup_p99_at_clean_rate")
            if best is not None:
                result.ratios["uc-edge/kamailio"] = best.rate / kam_best.rate
        add_series(result, "kamailio", kam_steps)
        if kam_steps[-1].clean and kam_best is not None and kam_best.rate == max(rates):
            result.notes.append(
                f"Kamailio was clean at the highest step offered ({max(rates)}/s): its ceiling is higher, "
                "so the ratio overstates uc-edge."
            )
    if uc_steps and uc_steps[-1].clean and best is not None and best.rate == max(rates):
        result.notes.append(f"uc-edge was clean at the highest step offered ({max(rates)}/s).")
    pinned_note = (
        f"uc-edge serve and Kamailio pinned to core {SERVER_CORE}, both SIPp processes (caller and callee) "
        f"to core {LOAD_CORE} (taskset), and so are the Kafka and S3 stand-ins (Tansu, SeaweedFS) when "
        "scripts/services started them; PostgreSQL is left where the system runs it"
        if (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
        else "not pinned (fewer than 2 cores or no taskset): 'one core' does not hold"
    )
    result.notes += [
        f"SIPp {UAC_SCENARIO.name} → server → SIPp {UAS_SCENARIO.name} over UDP "
        f"(-buff_size {SOCKET_BUFFER}): "
        f"INVITE with SDP, 100/180/200 with SDP, ACK, {hold_ms} ms hold without RTP, BYE/200; -l "
        f"max(200, rate * (hold + 2 s)); {WARMUP_CALLS} warm-up calls at {WARMUP_RATE}/s first; steps of "
        f"{step_seconds:g} s at {','.join(map(str, rates))} calls/s; clean = SIPp exit 0, 0 failed calls, "
        "SIPp done within 5 % + 2 s of calls/rate + hold, and the 200s arriving at >= 90 % of the offered "
        "rate (first to last, SIPp's clock); steps stop at the first unclean one.",
        pinned_note
        + ". CPU % = utime+stime from /proc over the step's wall time (Kamailio: all processes of its "
        "group); CPU per call = that / offered rate. The machine is shared with other work: 'other load' "
        f"is core {SERVER_CORE}'s busy time (/proc/stat) not spent by the server — when it is high the "
        "server had less than a core. PostgreSQL % = CPU of every local postgres process over the step "
        "(both cores; /proc, the postmaster's exited children included): what the database spent on the "
        "calls besides. Setup time = SIPp response-time counter 1 (INVITE sent → 200 "
        "received, ms resolution, -trace_rtt).",
        "Diagnostics in each step's log line: an OPTIONS probe every 100 ms from the harness to the server "
        "under test (its round trip is the server's event-loop lag plus its SIP path; p50/p99/max and "
        "unanswered probes), for uc-edge the call-row backlog (calls SIPp reports completed whose "
        "call_sessions row has not ended yet, sampled every 0.5 s), and SIPp's non-zero Failed* counters "
        "and per-message retransmissions/timeouts/unexpected messages (-trace_counts).",
        "uc-edge: UC_EDGE_CALL_REQUIRE_AUTH=false, UC_EDGE_SIP_TRUNKS=[{name: uas, host: 127.0.0.1, port: "
        "CALLEE, prefixes: [''], inbound_sources: [127.0.0.1]}], UC_EDGE_FLOOD_EXEMPT_SOURCES=127.0.0.1, "
        f"UC_EDGE_LOG_LEVEL=WARNING, UC_EDGE_NODE_ID={node_id}, UC_EDGE_OVERLOAD_CONTROL="
        f"{str(overload_control).lower()} (past its capacity the server answers a share of new INVITEs 503: "
        "SIPp acknowledges them and counts them in GenericCounter1, reported as 'refused'; a step with "
        "any is not clean, and its 'achieved' rate is the goodput); the B2BUA anchors media (RTP endpoints "
        "per leg) and writes call_sessions/call_legs/call_routing, call events (outbox) and a CDR per "
        "call to PostgreSQL. Sanity: call_sessions held exactly one ended row per call of every clean "
        "step (the bench rows stay in uc_calls under that node id); call_rows_settled_after = seconds "
        "from the end of the last step until every row of the run had ended (the writes trail the "
        "signalling).",
        "Kamailio (fairness: one UDP worker like uc-edge's one event loop, all its processes on the same "
        "one core): taskset -c 1 kamailio -f bench/peers/kamailio-proxy.cfg -DD -E -n 1 -x tlsf -m 4096 "
        "-M 16 -Y RUNDIR -P PIDFILE -A 'LISTEN=udp:127.0.0.1:PORT' -A 'TARGET=\"sip:127.0.0.1:CALLEE\"' "
        "(tm t_relay, record-route; no media, no database: a proxy does much less per call than a B2BUA).",
    ]
    return result


def add_series(result: SuiteResult, label: str, steps: Sequence[CallStep]) -> None:
    result.series[f"{label} CPU"] = [(s.rate, s.cpu_percent) for s in steps]
    result.series[f"{label} achieved rate"] = [(s.rate, s.achieved_rate) for s in steps]
    result.series[f"{label} setup p50"] = [(s.rate, s.setup_percentile(0.5)) for s in steps]
    result.series[f"{label} setup p99"] = [(s.rate, s.setup_percentile(0.99)) for s in steps]
    result.series[f"{label} CPU per call"] = [(s.rate, s.cpu_ms_per_call) for s in steps]
    result.series[f"{label} OPTIONS probe p99"] = [(s.rate, percentile(s.probe_ms, 0.99)) for s in steps]
    result.units[f"{label} OPTIONS probe p99"] = "ms"
    result.series[f"other load on core {SERVER_CORE} during {label}"] = [
        (s.rate, s.others_on_core_percent) for s in steps
    ]
    result.units.update(
        {
            f"{label} CPU": "% of one core",
            f"{label} achieved rate": "calls/s",
            f"{label} setup p50": "ms",
            f"{label} setup p99": "ms",
            f"{label} CPU per call": "ms CPU",
            f"other load on core {SERVER_CORE} during {label}": "% of one core",
        }
    )


SUITE = Suite(
    name="b2bua-cps",
    description="calls/s through the B2BUA on one core (SIPp caller and callee), vs a Kamailio proxy",
    run=run,
    params={
        "rates": f"offered rates, comma-separated (default {DEFAULT_RATES}; quick {QUICK_RATES})",
        "step_seconds": "seconds per rate step (default 10, quick 3)",
        "hold_ms": "call length between ACK and BYE, no RTP (default 1000)",
        "kamailio": "also run the steps through Kamailio (default true)",
        "overload_control": "uc-edge sheds new calls with 503 when SIP waits too long (default true)",
        "overload_factor": "with overload control, one more step at this multiple of the highest clean "
        "rate (default 2; 0 skips it)",
    },
)
