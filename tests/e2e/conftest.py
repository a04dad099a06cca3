"""Shared fixtures for end-to-end tests: a real ``uc-edge serve`` process on spare loopback ports, real SIP
users in DB_ACCOUNTS, and helpers to run peers (SIPp, sipsak, baresip) bounded in time.

- ``server`` (module scope) starts ``uc-edge serve`` with ``UC_EDGE_*`` taken from the test module's
  ``SERVER_ENV`` dict (if any) over the defaults below; it is killed (whole process group) afterwards.
- Bindings go to Redis db 13 (``UC_EDGE_E2E_REDIS_URL`` overrides); only the keys of the users a test
  created are deleted afterwards, so a shared database is never wiped.
- ``sip_users`` creates users with unique names (``e2e<hex>…``) and removes them and their bindings after
  the module.
- Every peer process is started in its own session and killed by process group; nothing is killed by name.
- A service that does not answer skips the tests, or fails them with ``UC_EDGE_REQUIRE_SERVICES=1``; so does
  a missing peer binary.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from storage.postgres.accounts import PgAccountStore
from storage.postgres.connect import create_pool
from storage.postgres.credentials import ScryptCost

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
E2E_REDIS_URL = os.environ.get("UC_EDGE_E2E_REDIS_URL", "redis://127.0.0.1:6379/13")
ACCOUNTS_DSN = "postgresql://uc_edge:uc_edge@127.0.0.1:5432/uc_accounts"
REALM = "uc-edge"
DOMAIN = "uc-edge.local"
# Test users' account passwords are never used to log in: the cheapest scrypt keeps provisioning fast.
CHEAP_SCRYPT = ScryptCost(n=2, r=1, p=1)
_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def unavailable(message: str) -> None:
    """Skip (or, when services are required, fail) a test whose service or peer is missing."""
    if os.environ.get("UC_EDGE_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (see ../shared/recipes/sip-peers.md)")
    assert path is not None
    return path


def free_port() -> int:
    """A port free for both UDP and TCP (SIP listens on both with the same number)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def free_port_pair() -> int:
    """A port P with P and P+1 free on UDP and TCP (baresip binds SIP TLS on port+1)."""
    for _ in range(100):
        port = free_port()
        if port >= 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, kind))
                    sock.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


def kill_group(process: subprocess.Popen[str] | subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group the test started, then SIGKILL it if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)


def run_bounded(
    command: Sequence[str], timeout: float, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a peer to completion in its own process group; the whole group dies if it overruns."""
    process = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        stdout, stderr = process.communicate()
        raise AssertionError(f"{command[0]} overran {timeout}s: {stdout[-2000:]} {stderr[-2000:]}") from None
    finally:
        kill_group(process, grace=1)
    return subprocess.CompletedProcess(list(command), process.returncode, stdout, stderr)


def run_sipp_uac(
    server: Server,
    scenario: Path,
    csv: Path,
    workdir: Path,
    *,
    calls: int,
    rate: int = 10,
    limit: int = 20,
    sipp_timeout: int = 30,
    extra: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """SIPp as a client of ``server`` on UDP, one scenario over an injection file, bounded in time.
    ``limit`` caps the calls open at once; ``extra`` adds options (``-trace_msg``, ``-error_file`` ...)."""
    return run_bounded(
        [
            require_binary("sipp"),
            "-sf",
            str(scenario),
            "-inf",
            str(csv),
            f"127.0.0.1:{server.sip_port}",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-m",
            str(calls),
            "-r",
            str(rate),
            "-l",
            str(limit),
            "-nostdin",
            "-timeout",
            str(sipp_timeout),
            "-trace_err",
            *extra,
        ],
        timeout=sipp_timeout + 30,
        cwd=workdir,
    )


@dataclass
class Server:
    process: subprocess.Popen[str]
    sip_port: int
    http_port: int
    banner: list[str]
    env: dict[str, str]
    log: Path

    def http(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics summed over its labels, by sample name."""
        status, body = self.http("/metrics")
        assert status == 200, body
        found: dict[str, float] = {}
        for line in body.decode().splitlines():
            match = _METRIC_LINE.match(line)
            if match:
                found[match[1]] = found.get(match[1], 0.0) + float(match[3])
        return found

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``uc-edge ARGS`` with the server's settings (same Redis, same database)."""
        result = run_bounded([sys.executable, "-m", "edge.cli", *args], timeout, cwd=ROOT, env=self.env)
        assert result.returncode == 0, result.stderr
        return result

    def registrations(self) -> str:
        return self.cli("registrations", "--limit", "100000").stdout

    def alive(self) -> bool:
        return self.process.poll() is None

    def stderr_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def server_env(sip_port: int, http_port: int, overrides: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UC_EDGE_")}
    env.update(
        UC_EDGE_SIP_UDP_PORT=str(sip_port),
        UC_EDGE_SIP_TCP_PORT=str(sip_port),
        UC_EDGE_HTTP_PORT=str(http_port),
        UC_EDGE_LOG_FORMAT="json",
        UC_EDGE_NODE_ID="e2e-node",
        UC_EDGE_REDIS_URL=E2E_REDIS_URL,
        UC_EDGE_DB_ACCOUNTS="uc_accounts",
        UC_EDGE_SIP_REALM=REALM,
        UC_EDGE_SIP_DOMAIN=DOMAIN,
    )
    env.update(overrides)
    return env


@contextlib.contextmanager
def running_server(overrides: dict[str, str], log: Path) -> Iterator[Server]:
    """``uc-edge serve`` on spare ports until the block ends; its stderr goes to ``log``."""
    sip_port, http_port = free_port(), free_port()
    env = server_env(sip_port, http_port, overrides)
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    try:
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
            raise AssertionError(f"server did not start: {banner} {log.read_text(errors='replace')[-4000:]}")
        yield Server(process, sip_port, http_port, banner, env, log)
    finally:
        kill_group(process)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server for one test module, with the module's ``SERVER_ENV`` overrides."""
    overrides: dict[str, str] = dict(getattr(request.module, "SERVER_ENV", {}))
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with running_server(overrides, log) as running:
        yield running


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- users ------------------------------------------------------------------------------------------------


@dataclass
class SipUsers:
    """Creates SIP users for a module and forgets them (accounts and bindings) afterwards."""

    store: PgAccountStore
    redis: aioredis.Redis
    prefix: str = field(default_factory=lambda: "e2e" + uuid.uuid4().hex[:8])
    created: list[str] = field(default_factory=list)
    _counter: int = 0

    async def create(self, count: int, password: str, label: str = "u") -> list[str]:
        names = []
        for _ in range(count):
            self._counter += 1
            name = f"{self.prefix}{label}{self._counter:05d}"
            await self.store.add_sip_account(name, password, REALM)
            self.created.append(name)
            names.append(name)
        return names

    async def bindings(self, aor: str) -> dict[str, str]:
        """binding id → stored JSON of one AOR, straight from Redis."""
        raw = await self.redis.hgetall(f"uc:loc:b:{aor}")
        return {_text(k): _text(v) for k, v in raw.items()}

    async def cleanup(self) -> None:
        for name in self.created:
            await self.store.remove_sip_account(name, REALM)
        async for key in self.redis.scan_iter(match=f"uc:loc:*{self.prefix}*", count=1000):
            await self.redis.delete(key)
        index = "uc:loc:aors"
        for aor in await self.redis.zrange(index, 0, -1):
            if isinstance(aor, bytes | str) and self.prefix in _text(aor):
                await self.redis.zrem(index, aor)


@pytest.fixture(scope="module")
async def sip_users() -> AsyncIterator[SipUsers]:
    try:
        pool = await create_pool(ACCOUNTS_DSN, min_size=1, max_size=2)
    except Exception as error:  # any failure to connect: service missing
        unavailable(f"PostgreSQL uc_accounts is not reachable ({error}); run bash scripts/services up")
    client = aioredis.from_url(E2E_REDIS_URL)
    try:
        await client.ping()
    except Exception as error:
        await pool.close()
        unavailable(f"Redis is not reachable ({error}); run bash scripts/services up")
    users = SipUsers(PgAccountStore(pool, scrypt_cost=CHEAP_SCRYPT), client)
    try:
        yield users
    finally:
        await users.cleanup()
        await client.aclose()
        await pool.close()


def wait_until(predicate: object, timeout: float, interval: float = 0.1) -> bool:
    """Poll a callable until it returns a truthy value or ``timeout`` passes."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
