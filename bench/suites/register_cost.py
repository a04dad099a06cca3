"""register-cost: CPU cost of one REGISTER round through the real SIP node, in process, no sockets.

A round is what SIPp's ``register_digest.xml`` does per user: REGISTER without credentials → 401
(answered statelessly), REGISTER with digest credentials (MD5, qop=auth) → 200 after the binding is
written. Both datagrams go in through the UDP listener's protocol object (``datagram_received``) of a
:class:`~edge.sip_node.SipNode` whose registrar is installed by ``SipNode.install_registrar``, exactly as
``uc-edge serve`` wires it; only the sockets are missing (answers land in a list) and the credential
database is a dict behind the real :class:`~edge.sip_node.CredentialCache`.

Bindings go to real Redis (a key prefix of this run's own, deleted afterwards) over the store's pipelined
connection when ``redis_url`` answers; otherwise, or with ``redis=fake``, the pipelined connection is
replaced by a fake that answers on the next loop iteration, like a socket read would.

The node's clocks are virtual (``step_ms`` per round), so Timer J (32 s) fires during a run and the
transaction table reaches a steady size; digest nonce salts are a counter. Figures:

* ``round_us`` — CPU µs (``process_time``) per round, REGISTERs sent ``batch`` at a time;
* ``challenge_us`` — CPU µs per REGISTER → 401 alone;
* ``instructions_per_round`` / ``instructions_per_challenge`` — with ``instructions=1`` and ``valgrind``
  on PATH: this module re-run under ``valgrind --tool=callgrind`` (fake Redis, so the count is
  deterministic), counting only the measured rounds (between ``zlib.adler32`` and ``zlib.crc32``
  markers). The client side (building the requests and the digest response) is counted too; its own
  cost is reported as ``client_instructions_per_round``.

The SIPp figure (``sip-register``) adds the system calls and the loop's I/O to this.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
import uuid
import zlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.framework import BenchError, Suite, SuiteContext, SuiteResult

REALM, DOMAIN, PASSWORD = "uc-edge", "uc-edge.local", "benchpass"
SERVER = ("127.0.0.1", 5070)
CLIENT = ("127.0.0.1", 5099)
USERS = 500
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
ANSWER_TIMEOUT = 10.0  # seconds for a batch's 200s (the store answers within milliseconds)
# 3,000 REGISTER rounds/s on one core leaves 333 µs per round for everything, system calls included.
TARGET_ROUND_US = 1e6 / 3000
ROOT = Path(__file__).resolve().parents[2]

TEMPLATE = (
    "REGISTER sip:{sh}:{sp} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {ch}:{cp};branch=z9hG4bK-{branch};rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:{user}@{dom}>;tag={tag}\r\n"
    "To: <sip:{user}@{dom}>\r\n"
    "Call-ID: {n}-7777@{ch}\r\n"
    "CSeq: {cseq} REGISTER\r\n"
    "Contact: <sip:{user}@{ch}:{cp};transport=UDP>\r\n"
    "Expires: 3600\r\n"
    "{auth}"
    "User-Agent: uc-edge register-cost bench\r\n"
    "Content-Length: 0\r\n\r\n"
)
NONCE = re.compile(rb'nonce="([^"]+)"')
OPAQUE = re.compile(rb'opaque="([^"]+)"')


class Clock:
    """The node's monotonic (transactions) and wall (nonces, expiry) clocks, moved by the rounds."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_700_000_000.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class Datagrams:
    """Stands in for the UDP transport: what the hub sends is kept, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self._waiter: tuple[int, asyncio.Future[None]] | None = None

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))
        if self._waiter is not None and len(self.sent) >= self._waiter[0]:
            if not self._waiter[1].done():
                self._waiter[1].set_result(None)
            self._waiter = None

    async def wait_for(self, count: int) -> None:
        """Until ``count`` datagrams were sent (without spinning the loop: its CPU would count)."""
        if len(self.sent) >= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter = (count, future)
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                await future
        except TimeoutError:
            raise BenchError(f"only {len(self.sent)} of {count} answers within {ANSWER_TIMEOUT} s") from None
        finally:
            self._waiter = None

    def close(self) -> None:
        pass


class FakePipe:
    """The pipelined Redis connection's ``run``: the reply ("written, 1 binding") comes on a later loop
    iteration, as a socket read would deliver it."""

    async def run(self, script: Any, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        loop.call_soon(future.set_result, [1, 1])
        return await future

    async def aclose(self) -> None:
        pass


class Accounts:
    """DB_ACCOUNTS stand-in: every bench user exists with the same password."""

    async def lookup_credentials(self, username: str, realm: str) -> Any:
        from storage.ports import SipCredentials

        account = uuid.uuid5(uuid.NAMESPACE_OID, username)
        md5 = hashlib.md5(f"{username}:{realm}:{PASSWORD}".encode()).hexdigest()
        sha = hashlib.sha256(f"{username}:{realm}:{PASSWORD}".encode()).hexdigest()
        return SipCredentials(account, username, realm, md5, sha, None)


def register(user: str, n: int, cseq: int, tag: str, auth: str = "") -> bytes:
    return TEMPLATE.format(
        sh=SERVER[0],
        sp=SERVER[1],
        ch=CLIENT[0],
        cp=CLIENT[1],
        branch=f"{tag}{n}-{cseq}",
        user=user,
        dom=DOMAIN,
        tag=f"{tag}{n}",
        n=f"{tag}{n}",
        cseq=cseq,
        auth=auth,
    ).encode()


def authorization(user: str, challenge: bytes) -> str:
    nonce_match, opaque_match = NONCE.search(challenge), OPAQUE.search(challenge)
    if nonce_match is None:
        raise BenchError(f"401 without a nonce: {challenge[:300]!r}")
    nonce = nonce_match.group(1).decode()
    opaque = f',opaque="{opaque_match.group(1).decode()}"' if opaque_match else ""
    uri = f"sip:{SERVER[0]}:{SERVER[1]}"
    ha1 = hashlib.md5(f"{user}:{REALM}:{PASSWORD}".encode()).hexdigest()
    ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()
    cnonce = "6b8b4567"
    response = hashlib.md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return (
        f'Authorization: Digest username="{user}",realm="{REALM}",cnonce="{cnonce}",nc=00000001,'
        f'qop=auth,uri="{uri}",nonce="{nonce}",response="{response}",algorithm=MD5{opaque}\r\n'
    )


@dataclass
class Bench:
    node: Any
    receive: Callable[[bytes, tuple[str, int]], None]
    udp: Datagrams
    clock: Clock
    deadline: list[float | None]
    users: list[str]
    step: float  # virtual seconds per round
    cleanup: Callable[[], Coroutine[Any, Any, None]]


async def build(redis_url: str | None, prefix: str, step_ms: float) -> Bench:
    """A SipNode as ``uc-edge serve`` wires it, minus sockets (``redis_url`` None: fake Redis)."""
    import redis.asyncio as aioredis

    import edge.sip_node as sip_node
    from edge.settings import Settings
    from signaling.transport.udp import _UdpProtocol
    from storage.redis.location import RedisLocationStore

    clock = Clock()
    settings = Settings(
        node_id="bench-register-cost",
        sip_host=SERVER[0],
        sip_udp_port=SERVER[1],
        sip_realm=REALM,
        sip_domain=DOMAIN,
        sip_digest_algorithms="MD5",
        flood_exempt_sources="127.0.0.1",
        digest_secret="0123456789abcdef0123456789abcdef",
        # 30 s of real time at 3,000 rounds/s is 90,000 rounds: as many rounds of virtual time, so a
        # user's credentials are looked up again as rarely as in production (not every 1,500 rounds)
        credential_cache_seconds=30.0 * 3000 * step_ms / 1000,
    )
    real_time = sip_node.time
    # The node reads its clocks through the module (``time.time()``/``time.monotonic()``); put back by
    # ``cleanup``.
    sip_node.time = types.SimpleNamespace(time=lambda: clock.wall, monotonic=lambda: clock.mono)  # type: ignore[attr-defined]
    try:
        node = sip_node.SipNode(settings)
    except BaseException:
        sip_node.time = real_time  # type: ignore[attr-defined]
        raise
    salts = iter(range(1, 1 << 62))
    node.authenticator._random_bytes = lambda n: next(salts).to_bytes(n, "big")
    hub = node.hub
    hub.now = lambda: clock.mono  # type: ignore[method-assign]
    deadline: list[float | None] = [None]

    def arm_timer() -> None:  # the rounds fire the hub's timer on the virtual clock
        deadline[0] = hub.endpoint.get_timer()

    hub._arm_timer = arm_timer  # type: ignore[method-assign]
    udp = Datagrams()
    hub._udp = udp  # type: ignore[attr-defined]
    hub.udp_address = SERVER
    hub.endpoint.local_addresses["udp"] = SERVER
    client = aioredis.Redis.from_url(redis_url or DEFAULT_REDIS_URL)
    location = RedisLocationStore(client, prefix=prefix, pipelined=True, clock=lambda: clock.wall)
    if redis_url is None:
        location._pipe = FakePipe()  # type: ignore[attr-defined]
    credentials = sip_node.CredentialCache(Accounts(), settings.credential_cache_seconds)  # type: ignore[arg-type]
    node._location = location
    node.install_registrar(location, credentials)
    users = [f"regcostu{i:04d}" for i in range(USERS)]  # bindings are under the run's own prefix
    for user in users:  # every user's credentials cached (their TTL is on the virtual clock: refreshed)
        await credentials(user, REALM)

    async def cleanup() -> None:
        sip_node.time = real_time  # type: ignore[attr-defined]
        await node.hub.stop()
        await location.aclose()
        if redis_url is not None:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            for start in range(0, len(keys), 500):
                await client.delete(*keys[start : start + 500])
        await client.aclose()

    receive = _UdpProtocol(hub).datagram_received
    return Bench(node, receive, udp, clock, deadline, users, step_ms / 1000, cleanup)


async def rounds(bench: Bench, first: int, count: int, batch: int, *, challenge_only: bool = False) -> None:
    """``count`` rounds, ``batch`` users at a time; every answer is checked."""
    udp, receive, users = bench.udp, bench.receive, bench.users
    end = first + count
    for start in range(first, end, batch):
        numbers = range(start, min(start + batch, end))
        challenges = []
        for n in numbers:
            user = users[n % len(users)]
            receive(register(user, n, 1, "r"), CLIENT)
            if not udp.sent or not udp.sent[-1][0].startswith(b"SIP/2.0 401 "):
                raise BenchError(f"no 401 to REGISTER without credentials: {udp.sent[-1:]!r}")
            challenges.append((n, user, udp.sent.pop()[0]))
        if not challenge_only:
            for n, user, challenge in challenges:
                receive(register(user, n, 2, "r", authorization(user, challenge)), CLIENT)
            await udp.wait_for(len(challenges))
            ok = [data for data, _addr in udp.sent if data.startswith(b"SIP/2.0 200 ")]
            if len(ok) != len(challenges):
                raise BenchError(f"{len(ok)} of {len(challenges)} REGISTERs got 200: {udp.sent[:1]!r}")
            udp.sent.clear()
        bench.clock.advance(bench.step * len(numbers))
        deadline = bench.deadline[0]
        if deadline is not None and bench.clock.mono >= deadline:
            bench.node.hub._on_timer()


async def measure(
    redis_url: str | None, warmup: int, count: int, batch: int, step_ms: float
) -> tuple[float, float, int, bool]:
    """(CPU µs per round, CPU µs per challenge-only round, live transactions, binding checked)."""
    prefix = f"bench-regcost-{uuid.uuid4().hex[:8]}:"
    bench = await build(redis_url, prefix, step_ms)
    from edge.server import tune_gc

    try:
        tune_gc()
        await rounds(bench, 0, warmup, batch)
        checked = False
        if redis_url is not None:  # the binding really is in Redis
            user = bench.users[0]
            found = await bench.node.registrar.store.lookup(f"sip:{user}@{DOMAIN}", bench.clock.wall)
            if not found or CLIENT[0] not in found[0].contact_uri:
                raise BenchError(f"no binding in Redis for {user} after REGISTER: {found!r}")
            checked = True
        began = time.process_time()
        await rounds(bench, warmup, count, batch)
        round_us = (time.process_time() - began) / count * 1e6
        live = bench.node.endpoint.active_transactions
        began = time.process_time()
        await rounds(bench, warmup + count, count, batch, challenge_only=True)
        challenge_us = (time.process_time() - began) / count * 1e6
        return round_us, challenge_us, live, checked
    finally:
        await bench.cleanup()


async def redis_reachable(url: str) -> bool:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


# --- instruction counts (valgrind) ------------------------------------------------------------


async def child(args: argparse.Namespace) -> None:
    """Run under callgrind: each ``zlib.adler32`` … ``zlib.crc32`` pair brackets one measured region
    (callgrind zeroes its counters at the first, dumps them at the second): full rounds, challenge-only
    rounds, then the client side alone (building the requests and digest responses)."""
    bench = await build(None, "bench-regcost:", args.step_ms)
    from edge.server import tune_gc

    try:
        tune_gc()
        await rounds(bench, 0, args.warmup, args.batch)
        zlib.adler32(b"start")
        await rounds(bench, args.warmup, args.rounds, args.batch)
        zlib.crc32(b"stop")
        zlib.adler32(b"start")
        await rounds(bench, args.warmup + args.rounds, args.rounds, args.batch, challenge_only=True)
        zlib.crc32(b"stop")
    finally:
        await bench.cleanup()
    canned = (
        b'SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Digest realm="uc-edge", '
        b'nonce="AAABi8DJxwAAAAAAAAAAAQxTfJ0N3lS8AazBkQGuDqE", opaque="abcdefabcdefabcd", '
        b'algorithm=MD5, qop="auth"\r\n\r\n'
    )
    zlib.adler32(b"start")
    for n in range(args.rounds):
        user = bench.users[n % USERS]
        register(user, n, 1, "r")
        register(user, n, 2, "r", authorization(user, canned))
    zlib.crc32(b"stop")


REGIONS = ("full", "challenge", "client")


def callgrind(warmup: int, count: int, batch: int, step_ms: float, workdir: Path) -> dict[str, int]:
    """Instructions in each measured region of one ``child`` run under callgrind."""
    out = workdir / "callgrind.%p"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        "--zero-before=adler32*",
        "--dump-before=crc32*",
        sys.executable,
        "-m",
        "bench.suites.register_cost",
        str(warmup),
        str(count),
        "--batch",
        str(batch),
        "--step-ms",
        str(step_ms),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise BenchError(f"callgrind run failed: {done.stderr[-2000:]}")
    # One dump per marker, in order; zlib's crc32 may call crc32_z, which the pattern matches too: a
    # second, (nearly) empty dump right after the first, skipped here.
    totals = []
    for dump in sorted(workdir.glob("callgrind.*.*"), key=lambda path: int(path.suffix[1:])):
        summary = [line for line in dump.read_text().splitlines() if line.startswith("summary:")]
        if summary and int(summary[0].split()[1]) > 10_000:
            totals.append(int(summary[0].split()[1]))
    if len(totals) < len(REGIONS):
        raise BenchError(f"callgrind wrote {len(totals)} dumps, expected {len(REGIONS)} regions")
    counts = dict(zip(REGIONS, totals, strict=False))
    return counts


# --- the suite --------------------------------------------------------------------------------


async def run(ctx: SuiteContext) -> SuiteResult:
    warmup = ctx.param("warmup", 300 if ctx.quick else 2000)
    count = ctx.param("rounds", 1500 if ctx.quick else 20_000)
    batch = ctx.param("batch", 10)
    step_ms = ctx.param("step_ms", 20.0)
    mode = ctx.param("redis", "auto")
    redis_url = ctx.param("redis_url", DEFAULT_REDIS_URL)
    want_instructions = ctx.param("instructions", 0)
    if mode not in ("auto", "real", "fake"):
        raise BenchError("redis must be auto, real or fake")
    if count < 1 or warmup < 1 or batch < 1:
        raise BenchError("rounds, warmup and batch must be at least 1")

    real = mode != "fake" and await redis_reachable(redis_url)
    if mode == "real" and not real:
        raise BenchError(f"Redis at {redis_url} does not answer")
    figures: dict[str, float] = {}
    units: dict[str, str] = {}
    notes: list[str] = []
    task = ctx.task("REGISTER rounds", total=2 if real else 1)

    round_us, challenge_us, live, _ = await measure(None, warmup, count, batch, step_ms)
    task.advance()
    figures.update(round_us_fake_redis=round_us, challenge_us=challenge_us)
    ctx.log(f"fake Redis: {round_us:.1f} µs per round, {challenge_us:.1f} µs per 401, {live} transactions")
    if real:
        round_us, real_challenge_us, live, checked = await measure(redis_url, warmup, count, batch, step_ms)
        task.advance()
        figures["round_us"] = round_us
        ctx.log(f"real Redis: {round_us:.1f} µs per round ({real_challenge_us:.1f} µs per 401)")
        notes.append(
            f"round_us: bindings written to real Redis ({redis_url}, prefix removed afterwards) over the "
            f"store's pipelined connection; binding read back before timing: {checked}"
        )
    else:
        figures["round_us"] = figures["round_us_fake_redis"]
        notes.append("round_us: Redis faked at the pipelined connection (unreachable or redis=fake)")
    task.finish()
    figures["rounds_per_core_s"] = 1e6 / figures["round_us"]
    figures["live_transactions"] = float(live)
    units.update(
        round_us="µs CPU",
        round_us_fake_redis="µs CPU",
        challenge_us="µs CPU",
        rounds_per_core_s="rounds/s",
        live_transactions="transactions",
    )

    if want_instructions:
        if shutil.which("valgrind") is None:
            notes.append("instructions=1 asked for, but valgrind is not on PATH: no instruction counts")
        else:
            cg_warmup, cg_rounds = (100, 200) if ctx.quick else (600, 1000)
            cg_task = ctx.task("callgrind", total=1)
            with tempfile.TemporaryDirectory(dir=ctx.workdir) as scratch:
                counts = callgrind(cg_warmup, cg_rounds, batch, step_ms, Path(scratch))
            cg_task.finish()
            figures["instructions_per_round"] = counts["full"] / cg_rounds
            figures["instructions_per_challenge"] = counts["challenge"] / cg_rounds
            figures["client_instructions_per_round"] = counts["client"] / cg_rounds
            for name in (
                "instructions_per_round",
                "instructions_per_challenge",
                "client_instructions_per_round",
            ):
                units[name] = "instructions"
            ctx.log(f"callgrind: {figures['instructions_per_round']:,.0f} instructions per round")
            notes.append(
                f"instructions: valgrind --tool=callgrind over {cg_rounds} rounds after {cg_warmup} warm-up "
                "rounds, fake Redis; they include the client side (client_instructions_per_round)"
            )

    notes.append(
        f"{count} rounds after {warmup} warm-up rounds, {batch} users at a time, {USERS} users, virtual "
        f"clocks {step_ms} ms per round (Timer J fires: {live} transactions live at the end); "
        "challenge_us from as many REGISTER → 401 alone; CPU from time.process_time (client side included)"
    )
    notes.append(
        f"target: round_us ≤ {TARGET_ROUND_US:.0f} µs is 3,000 REGISTER rounds/s on one core before system "
        "calls and the loop's I/O (sip-register measures those with SIPp)"
    )
    return SuiteResult(
        figures=figures,
        units=units,
        targets={"round_us": TARGET_ROUND_US},
        lower_is_better={"round_us", "round_us_fake_redis", "challenge_us"},
        notes=notes,
    )


SUITE = Suite(
    name="register-cost",
    description="CPU per REGISTER round (401 + authenticated 200) through the SIP node in process",
    run=run,
    params={
        "rounds": "measured rounds (default 20000, quick 1500)",
        "warmup": "warm-up rounds (default 2000, quick 300)",
        "batch": "REGISTERs in flight at once (default 10)",
        "step_ms": "virtual time per round, ms (default 20)",
        "redis": "auto (real Redis when it answers), real or fake",
        "redis_url": f"Redis for the bindings (default {DEFAULT_REDIS_URL}; keys under a unique prefix)",
        "instructions": "1: also count instructions per round under valgrind callgrind (slow)",
    },
)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="register-cost child run (under callgrind)")
    parser.add_argument("warmup", type=int)
    parser.add_argument("rounds", type=int)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--step-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(child(args))
    else:
        uvloop.run(child(args))


if __name__ == "__main__":
    main()
