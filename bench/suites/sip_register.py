"""sip-register: REGISTER with digest auth per second on one core (SIPp), uc-edge against Kamailio.

What runs (every process is started here, pinned, and stopped here by its process group):

* ``uc-edge serve`` on its own spare ports, pinned to one core (``taskset -c 1``), digest MD5 only (SIPp
  3.6 answers only the first challenge and only MD5), flood protection exempting 127.0.0.1, bindings in
  Redis db 14; ``users`` bench users are added to DB_ACCOUNTS (unique names, removed afterwards);
* memory: a warm-up batch registers first, then every bench user registers once (distinct AORs); the
  deltas of Redis ``used_memory``, of the exact size of the new keys (``MEMORY USAGE``) and of the server's
  RSS are scaled to 10,000 registrations;
* rate steps: SIPp (``bench/peers/register_digest.xml``, pinned to the other core) offers each rate in
  turn for ``step_seconds``; a step is clean when SIPp exits 0, every call succeeded and the achieved rate is
  at least 95 % of the offered one. The highest clean rate is ``register_rate_clean``; the server's CPU %
  (from ``/proc``) is recorded per step. Steps stop at the first unclean one;
* the same steps against Kamailio's registrar (``bench/peers/kamailio-registrar.cfg``, one UDP worker,
  ``taskset -c 1``), for the ratio ``uc-edge/kamailio``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from bench.framework import BenchError, Suite, SuiteContext, SuiteResult
from bench.suites._sip_load import (
    LOAD_CORE,
    ROOT,
    SERVER_CORE,
    SOCKET_BUFFER,
    free_port,
    group_pids,
    kamailio,
    parse_rates,
    report_server_errors,
    rss_kib,
    run_sipp_client,
    sipp_load_command,
    uc_edge_serve,
)

PEERS = ROOT / "bench" / "peers"
SCENARIO = PEERS / "register_digest.xml"
KAMAILIO_CFG = PEERS / "kamailio-registrar.cfg"
# kamailio-registrar.cfg checks every user against its PASSWORD define; the bench users share it.
PASSWORD = "benchpass"
DOMAIN = "uc-edge.local"
REALM = "uc-edge"
REDIS_URL = "redis://127.0.0.1:6379/14"
ACCOUNTS_DSN = "postgresql://uc_edge:uc_edge@127.0.0.1:5432/uc_accounts"
TARGET_REGISTER_RATE = 3000.0
# 2500 and 3500 resolve the region around the 3,000/s target (a step is clean or not, nothing between).
DEFAULT_RATES = "100,250,500,1000,1500,2000,2500,3000,3500,4000"
# SIPp needs a moment to start and to collect the last answers: a step may run 5 % + 0.25 s over ideal.
PACE_TOLERANCE, PACE_SLACK_SECONDS = 1.05, 0.25
WARMUP_USERS = 200


# --- processes --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def uc_edge_server(workdir: Path) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    sip_port, http_port = free_port(), free_port()
    settings = {
        "UC_EDGE_SIP_UDP_PORT": str(sip_port),
        "UC_EDGE_SIP_TCP_PORT": str(sip_port),
        "UC_EDGE_HTTP_PORT": str(http_port),
        "UC_EDGE_SIP_DIGEST_ALGORITHMS": "MD5",
        "UC_EDGE_FLOOD_EXEMPT_SOURCES": "127.0.0.1",
        "UC_EDGE_LOG_LEVEL": "WARNING",
        "UC_EDGE_LOG_FORMAT": "json",
        "UC_EDGE_REDIS_URL": REDIS_URL,
        "UC_EDGE_SIP_REALM": REALM,
        "UC_EDGE_SIP_DOMAIN": DOMAIN,
        "UC_EDGE_NODE_ID": "bench-register",
    }
    with uc_edge_serve(workdir, settings) as process:
        yield process, sip_port, http_port


@contextlib.contextmanager
def kamailio_registrar(workdir: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    with kamailio(workdir, KAMAILIO_CFG, shm_mb=256) as (process, port):
        yield process, port


# --- SIPp -------------------------------------------------------------------------------------------------


@dataclass
class StepResult:
    rate: int
    calls: int
    successful: int
    failed: int
    retransmissions: int
    exit_code: int
    wall_seconds: float
    sipp_seconds: float  # SIPp's own StartTime → CurrentTime of its last statistics row
    cpu_percent: float
    load_average: float = 0.0
    detail: str = ""

    @property
    def achieved_rate(self) -> float:
        return self.successful / self.sipp_seconds if self.sipp_seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Every call succeeded (SIPp's own pass criterion)."""
        return self.exit_code == 0 and self.failed == 0 and self.successful == self.calls

    @property
    def clean(self) -> bool:
        """Complete, and at the offered pace (not throttled by the outstanding-call limit)."""
        ideal = self.calls / self.rate
        return self.complete and 0 < self.sipp_seconds <= ideal * PACE_TOLERANCE + PACE_SLACK_SECONDS


def write_users_csv(path: Path, users: Sequence[str]) -> Path:
    lines = ["SEQUENTIAL"]
    lines += [f"{u};{PASSWORD};{DOMAIN};[authentication username={u} password={PASSWORD}]" for u in users]
    path.write_text("\n".join(lines) + "\n")
    return path


async def run_sipp(
    server_port: int,
    users_csv: Path,
    rate: int,
    calls: int,
    server_pids: Sequence[int],
    workdir: Path,
    local_port: int,
) -> StepResult:
    """Offer ``calls`` REGISTERs at ``rate``/s; the server's CPU % over the same interval.

    Every run against one server uses the same ``local_port``, so a user's Contact is the same each time
    and a later step refreshes its binding instead of adding one more.
    """
    stat = workdir / f"sipp-{server_port}-{rate}-{uuid.uuid4().hex[:6]}.csv"
    errors = stat.with_suffix(".err")
    timeout = calls / rate * 2 + 20
    command = sipp_load_command(
        SCENARIO,
        f"127.0.0.1:{server_port}",
        scenario_args=["-inf", str(users_csv)],
        local_port=local_port,
        rate=rate,
        calls=calls,
        limit=max(200, rate),
        timeout=timeout,
        stat=stat,
        errors=errors,
    )
    run = await run_sipp_client(
        command, cwd=workdir, sipp_timeout=timeout, stat=stat, errors=errors, server_pids=server_pids
    )
    return StepResult(
        rate=rate,
        calls=calls,
        successful=run.counter("SuccessfulCall(C)"),
        failed=run.counter("FailedCall(C)"),
        retransmissions=run.counter("Retransmissions(C)"),
        exit_code=run.exit_code,
        wall_seconds=run.wall_seconds,
        sipp_seconds=run.sipp_seconds,
        cpu_percent=run.cpu_percent,
        load_average=os.getloadavg()[0],
        detail=run.detail,
    )


async def rate_steps(
    ctx: SuiteContext,
    label: str,
    server_port: int,
    users_csv: Path,
    rates: Sequence[int],
    step_seconds: float,
    server_pids: Sequence[int],
    local_port: int,
) -> list[StepResult]:
    task = ctx.task(f"{label}: rate steps", total=len(rates))
    results: list[StepResult] = []
    for rate in rates:
        calls = int(rate * step_seconds)
        step = await run_sipp(server_port, users_csv, rate, calls, server_pids, ctx.workdir, local_port)
        results.append(step)
        task.advance()
        ctx.log(
            f"{label} {rate}/s: {step.successful}/{step.calls} ok, {step.failed} failed, "
            f"{step.retransmissions} retransmissions, achieved {step.achieved_rate:.0f}/s, "
            f"server CPU {step.cpu_percent:.0f}%, sipp exit {step.exit_code}, "
            f"machine load average {step.load_average:.2f}"
            + ("" if step.clean else f" — not clean: {step.detail.strip()[:800]}")
        )
        if not step.clean:
            break
        await asyncio.sleep(1.0)  # let the last transactions finish before the next step
    task.finish()
    return results


def highest_clean(steps: Sequence[StepResult]) -> float:
    clean = [s.rate for s in steps if s.clean]
    return float(max(clean)) if clean else 0.0


# --- users and stores -------------------------------------------------------------------------------------


@dataclass
class BenchUsers:
    prefix: str = field(default_factory=lambda: "bench" + uuid.uuid4().hex[:8])
    created: list[str] = field(default_factory=list)

    def names(self, count: int, label: str) -> list[str]:
        return [f"{self.prefix}{label}{i:06d}" for i in range(count)]

    async def provision(self, ctx: SuiteContext, names: Sequence[str]) -> None:
        from storage.postgres.accounts import PgAccountStore
        from storage.postgres.connect import create_pool
        from storage.postgres.credentials import ScryptCost

        task = ctx.task("provisioning SIP users", total=len(names))
        pool = await create_pool(ACCOUNTS_DSN, min_size=1, max_size=4)
        try:
            # The accounts' login hash is never used here: the cheapest scrypt keeps 10k inserts fast.
            store = PgAccountStore(pool, scrypt_cost=ScryptCost(n=2, r=1, p=1))
            for start in range(0, len(names), 200):
                batch = names[start : start + 200]
                self.created.extend(batch)  # before the insert: a partial batch is still cleaned up
                await asyncio.gather(*(store.add_sip_account(n, PASSWORD, REALM) for n in batch))
                task.advance(len(batch))
        finally:
            await pool.close()

    async def cleanup(self, ctx: SuiteContext) -> None:
        from storage.postgres.accounts import PgAccountStore
        from storage.postgres.connect import create_pool

        pool = await create_pool(ACCOUNTS_DSN, min_size=1, max_size=4)
        try:
            store = PgAccountStore(pool)
            for start in range(0, len(self.created), 200):
                batch = self.created[start : start + 200]
                await asyncio.gather(*(store.remove_sip_account(n, REALM) for n in batch))
        finally:
            await pool.close()
        client = aioredis.from_url(REDIS_URL)
        try:
            removed = await delete_keys(client, f"uc:loc:*{self.prefix}*")
            index = "uc:loc:aors"
            members = await client.zrange(index, 0, -1)
            ours = [a for a in members if isinstance(a, bytes) and self.prefix.encode() in a]
            for start in range(0, len(ours), 1000):
                await client.zrem(index, *ours[start : start + 1000])
        finally:
            await client.aclose()
        ctx.log(f"removed {len(self.created)} bench users and {removed} Redis keys")


async def delete_keys(client: aioredis.Redis, pattern: str) -> int:
    removed = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += await client.delete(*batch)
            batch = []
    if batch:
        removed += await client.delete(*batch)
    return removed


async def key_bytes(client: aioredis.Redis, pattern: str) -> int:
    """Exact bytes Redis reports for every key matching ``pattern`` (MEMORY USAGE, all samples)."""
    total = 0
    keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
    for start in range(0, len(keys), 500):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + 500]:
            pipe.memory_usage(key, samples=0)
        total += sum(int(v or 0) for v in await pipe.execute())
    return total


def metric(http_port: int, name: str) -> float:
    """One sample of the server's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


async def used_memory(client: aioredis.Redis) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


# --- the suite --------------------------------------------------------------------------------------------


async def measure_memory(
    ctx: SuiteContext,
    server_pid: int,
    server_port: int,
    http_port: int,
    users: BenchUsers,
    measured: Sequence[str],
    rate: int,
    local_port: int,
) -> dict[str, float]:
    """Register ``measured`` distinct users once; deltas scaled to 10,000 registrations (KiB)."""
    client = aioredis.from_url(REDIS_URL)
    try:
        pattern = f"uc:loc:*{users.prefix}m*"
        redis_before = await used_memory(client)
        keys_before = await key_bytes(client, pattern)
        rss_before = rss_kib(server_pid)
        csv_path = write_users_csv(ctx.workdir / "memory-users.csv", measured)
        step = await run_sipp(
            server_port, csv_path, rate, len(measured), [server_pid], ctx.workdir, local_port
        )
        if not step.complete:
            raise BenchError(f"registering the memory batch failed: {step}")
        await asyncio.sleep(1.0)
        redis_after = await used_memory(client)
        keys_after = await key_bytes(client, pattern)
        rss_after = rss_kib(server_pid)
        live_transactions = metric(http_port, "uc_sip_active_transactions")
        aors = len([k async for k in client.scan_iter(match=f"uc:loc:b:*{users.prefix}m*", count=1000)])
    finally:
        await client.aclose()
    if aors != len(measured):
        raise BenchError(f"expected {len(measured)} bindings after the memory batch, Redis holds {aors}")
    scale = 10_000 / len(measured)
    figures = {
        "redis_used_memory_per_10k_registrations": (redis_after - redis_before) / 1024 * scale,
        "redis_key_bytes_per_10k_registrations": (keys_after - keys_before) / 1024 * scale,
        "server_rss_per_10k_registrations": (rss_after - rss_before) * scale,
    }
    ctx.log(
        f"memory over {len(measured)} distinct registrations: Redis used_memory "
        f"{(redis_after - redis_before) / 1024:.0f} KiB, keys {(keys_after - keys_before) / 1024:.0f} KiB, "
        f"server RSS {rss_after - rss_before:.0f} KiB, with {live_transactions:.0f} SIP transactions still "
        "alive (UDP non-INVITE server transactions linger 32 s, Timer J)"
    )
    return figures


async def run(ctx: SuiteContext) -> SuiteResult:
    for tool in ("sipp",):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (apt-get install sip-tester)")
    user_count = ctx.param("users", 500 if ctx.quick else 10_000)
    step_seconds = ctx.param("step_seconds", 3.0 if ctx.quick else 10.0)
    rates = parse_rates(ctx.param("rates", DEFAULT_RATES))
    with_kamailio = ctx.param("kamailio", True)
    memory_rate = ctx.param("memory_rate", 200)
    if user_count < 10 or user_count > 100_000:
        raise BenchError("--param users must be within 10..100000")
    if step_seconds <= 0 or step_seconds > 120:
        raise BenchError("--param step_seconds must be within (0, 120]")

    users = BenchUsers()
    warmup = users.names(WARMUP_USERS, "w")
    measured = users.names(user_count, "m")
    result = SuiteResult(x_label="offered rate (REGISTER/s)")
    try:
        await users.provision(ctx, [*warmup, *measured])
        all_users_csv = write_users_csv(ctx.workdir / "users.csv", measured)

        with uc_edge_server(ctx.workdir) as (server, port, http_port):
            sipp_port = free_port()
            warmup_csv = write_users_csv(ctx.workdir / "warmup.csv", warmup)
            warm = await run_sipp(port, warmup_csv, 200, WARMUP_USERS, [server.pid], ctx.workdir, sipp_port)
            if not warm.complete:
                raise BenchError(f"uc-edge did not register the warm-up users cleanly: {warm}")
            result.figures.update(
                await measure_memory(
                    ctx, server.pid, port, http_port, users, measured, memory_rate, sipp_port
                )
            )
            uc_steps = await rate_steps(
                ctx, "uc-edge", port, all_users_csv, rates, step_seconds, [server.pid], sipp_port
            )
            if server.poll() is not None:
                raise BenchError("uc-edge exited during the run (see its log in the workdir)")
        report_server_errors(ctx, ctx.workdir / "uc-edge.log")

        kam_steps: list[StepResult] = []
        if with_kamailio:
            with kamailio_registrar(ctx.workdir) as (kamailio, kam_port):
                pids = group_pids(kamailio.pid)
                kam_steps = await rate_steps(
                    ctx, "kamailio", kam_port, all_users_csv, rates, step_seconds, pids, free_port()
                )
    finally:
        await users.cleanup(ctx)

    uc_clean = highest_clean(uc_steps)
    result.figures["register_rate_clean"] = uc_clean
    result.targets["register_rate_clean"] = TARGET_REGISTER_RATE
    clean_cpu = [s.cpu_percent for s in uc_steps if s.clean and s.rate == uc_clean]
    if clean_cpu:
        result.figures["server_cpu_at_clean_rate"] = clean_cpu[0]
    result.series["uc-edge CPU"] = [(s.rate, s.cpu_percent) for s in uc_steps]
    result.series["uc-edge achieved rate"] = [(s.rate, s.achieved_rate) for s in uc_steps]
    result.units.update(
        {
            "register_rate_clean": "REGISTER/s",
            "server_cpu_at_clean_rate": "% of one core",
            "redis_used_memory_per_10k_registrations": "KiB",
            "redis_key_bytes_per_10k_registrations": "KiB",
            "server_rss_per_10k_registrations": "KiB",
            "uc-edge CPU": "% of one core",
            "uc-edge achieved rate": "REGISTER/s",
        }
    )
    if kam_steps:
        kam_clean = highest_clean(kam_steps)
        result.figures["kamailio_register_rate_clean"] = kam_clean
        result.units["kamailio_register_rate_clean"] = "REGISTER/s"
        result.series["kamailio CPU"] = [(s.rate, s.cpu_percent) for s in kam_steps]
        result.series["kamailio achieved rate"] = [(s.rate, s.achieved_rate) for s in kam_steps]
        result.units.update({"kamailio CPU": "% of one core", "kamailio achieved rate": "REGISTER/s"})
        if kam_clean > 0:
            result.ratios["uc-edge/kamailio"] = uc_clean / kam_clean
        if kam_steps[-1].clean and kam_clean == max(rates):
            result.notes.append(
                f"Kamailio was clean at the highest step offered ({max(rates)}/s): its ceiling is higher, "
                "so the ratio overstates uc-edge."
            )
    if uc_steps and uc_steps[-1].clean and uc_clean == max(rates):
        result.notes.append(f"uc-edge was clean at the highest step offered ({max(rates)}/s).")
    pinned_note = (
        f"uc-edge serve and Kamailio pinned to core {SERVER_CORE}, SIPp to core {LOAD_CORE} (taskset)"
        if (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
        else "not pinned (fewer than 2 cores or no taskset): 'one core' does not hold"
    )
    result.notes += [
        f"{user_count} bench users (digest MD5, qop=auth), SIPp {SCENARIO.name} over UDP with -buff_size "
        f"{SOCKET_BUFFER}, -l max(200, rate); steps of {step_seconds:g} s at {','.join(map(str, rates))}/s; "
        "clean = SIPp exit 0, 0 failed calls, all calls done within 5 % + 0.25 s of calls/rate (by SIPp's "
        "own clock); "
        "steps stop at the first unclean one.",
        pinned_note
        + ". CPU % = utime+stime from /proc over the step's wall time (Kamailio: all processes of "
        "its group).",
        "uc-edge: UC_EDGE_SIP_DIGEST_ALGORITHMS=MD5 UC_EDGE_FLOOD_EXEMPT_SOURCES=127.0.0.1 "
        f"UC_EDGE_LOG_LEVEL=WARNING UC_EDGE_REDIS_URL={REDIS_URL}; rate steps re-register users already "
        "bound (binding refresh), credentials cached in-process (30 s); the 401 challenge is answered "
        "statelessly (RFC 3261 §8.2.7, as Kamailio's sl_send_reply), the authenticated REGISTER through a "
        "server transaction.",
        "Kamailio: taskset -c 1 kamailio -f bench/peers/kamailio-registrar.cfg -DD -E -n 1 -x tlsf -m 256 "
        "-M 16 -Y RUNDIR -P PIDFILE -A 'LISTEN=udp:127.0.0.1:PORT' (usrloc in memory, pv_www_authenticate "
        "MD5 with one shared password, so no database lookups).",
        f"Memory: {WARMUP_USERS} warm-up registrations first, then {user_count} distinct users registered "
        f"once at {memory_rate}/s; deltas scaled to 10,000. Redis used_memory is for the whole Redis "
        "instance (other clients' writes add noise); redis_key_bytes is the exact MEMORY USAGE of the new "
        "binding keys.",
    ]
    return result


SUITE = Suite(
    name="sip-register",
    description="REGISTER with digest auth per second on one core (SIPp), vs Kamailio; memory per 10k",
    run=run,
    params={
        "users": "bench SIP users (default 10000, quick 500)",
        "rates": f"offered rates, comma-separated (default {DEFAULT_RATES})",
        "step_seconds": "seconds per rate step (default 10, quick 3)",
        "kamailio": "also run the steps against Kamailio (default true)",
        "memory_rate": "REGISTER/s while registering the memory batch (default 200)",
    },
)
