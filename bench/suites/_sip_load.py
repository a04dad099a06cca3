"""Shared by the SIP load suites (sip-register, b2bua-cps): processes, CPU sampling and SIPp runs.

Not a suite (no ``SUITE``): discovery passes over it. Every process started here runs in a session of its
own so that ``stop_group`` ends it and everything it forked, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.framework import BenchError, SuiteContext, monotonic

ROOT = Path(__file__).resolve().parents[2]
SOCKET_BUFFER = 4 * 1024 * 1024
SERVER_CORE, LOAD_CORE = "1", "0"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- ports, pinning, process groups -----------------------------------------------------------------------


def free_port() -> int:
    """A loopback port free for both TCP and UDP (SIP listens on both)."""
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
    raise BenchError("no free port on 127.0.0.1")


def pinned(core: str, command: Sequence[str]) -> list[str]:
    """``command`` on one core when the machine has two or more (else unpinned: noted in the result)."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", core, *command]
    return list(command)


SERVICES_DIR = Path(os.environ.get("UC_EDGE_SERVICES_DIR", ROOT / ".services"))
# The stand-ins `scripts/services up` starts for Kafka and S3 (pid files in SERVICES_DIR): load-side
# infrastructure of this machine, not the product (production runs Kafka elsewhere).
STAND_IN_SERVICES = ("kafka", "s3")


@contextlib.contextmanager
def stand_ins_on_load_core() -> Iterator[str]:
    """Run the Kafka and S3 stand-ins this checkout started on the load core for the duration, so that the
    server's core is shared with as little besides PostgreSQL as the machine allows (Tansu and SeaweedFS
    took 5-8 % of it at 300 calls/s, read from /proc, when the server was near its limit). Every thread
    is moved (affinity is per thread) and put back afterwards. Only processes named by the pid files of
    ``scripts/services`` are touched; yields what was done, for the notes."""
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
        yield "not moved (fewer than 2 cores)"
        return
    before: dict[int, set[int]] = {}
    moved: list[str] = []
    for name in STAND_IN_SERVICES:
        try:
            pid = int((SERVICES_DIR / f"{name}.pid").read_text().strip())
            threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
        except (OSError, ValueError):
            continue  # not started by this checkout (or not running): left alone
        for tid in threads:
            with contextlib.suppress(OSError):
                before[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, {int(LOAD_CORE)})
        moved.append(f"{name} (pid {pid})")
    try:
        yield f"{', '.join(moved)} moved to core {LOAD_CORE}" if moved else "none started by scripts/services"
    finally:
        for tid, cores in before.items():
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.sched_setaffinity(tid, cores)


def stop_group(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM the process group this suite started, SIGKILL it if it lingers."""
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


def group_pids(pgid: int) -> list[int]:
    """Every live process of process group ``pgid`` (Kamailio forks its workers into the group)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry))
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "(comm)": state, ppid, pgrp, ...
            found.append(int(entry))
    return found


# --- CPU and memory from /proc ----------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as handle:
        text = handle.read()
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds consumed so far by ``pids`` (utime, stime: fields 14, 15 of stat)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = _stat_fields(pid)
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def rss_kib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return float(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


# --- the servers under test -------------------------------------------------------------------------------


@contextlib.contextmanager
def uc_edge_serve(workdir: Path, settings: Mapping[str, str]) -> Iterator[subprocess.Popen[str]]:
    """``uc-edge serve`` on the server core with only ``settings`` as its UC_EDGE_* environment, until it
    reports its metrics listener; logs to ``workdir/uc-edge.log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UC_EDGE_")}
    env.update(settings)
    log = open(workdir / "uc-edge.log", "w")  # closed in finally
    process = subprocess.Popen(
        pinned(SERVER_CORE, [sys.executable, "-m", "edge.cli", "serve"]),
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        started = False
        while time.monotonic() < deadline and not started:
            line = process.stdout.readline()
            if not line:
                break
            started = "metrics" in line
        if not started:
            raise BenchError(f"uc-edge serve did not start: {(workdir / 'uc-edge.log').read_text()[-2000:]}")
        yield process
    finally:
        stop_group(process)
        log.close()


@contextlib.contextmanager
def kamailio(
    workdir: Path, config: Path, *, shm_mb: int, defines: Sequence[str] = ()
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Kamailio with ``config`` on the server core, one UDP worker, listening on a fresh loopback port
    (``LISTEN`` define) plus ``defines``, until it answers OPTIONS; yields the process and its port."""
    binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
    if not Path(binary).exists():
        raise BenchError("kamailio is not installed (apt-get install kamailio)")
    port = free_port()
    rundir = workdir / "kamailio-run"
    rundir.mkdir(exist_ok=True)
    define_args = [arg for define in (f"LISTEN=udp:127.0.0.1:{port}", *defines) for arg in ("-A", define)]
    command = pinned(
        SERVER_CORE,
        [
            binary,
            "-f",
            str(config),
            "-DD",
            "-E",
            "-n",
            "1",
            "-x",
            "tlsf",
            "-m",
            str(shm_mb),
            "-M",
            "16",
            "-Y",
            str(rundir),
            "-P",
            str(rundir / "kamailio.pid"),
            *define_args,
        ],
    )
    log = open(workdir / "kamailio.log", "w")  # closed in finally
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, text=True, start_new_session=True
    )
    try:
        if not wait_for_sip(port, process, timeout=15):
            raise BenchError(f"kamailio did not answer: {(workdir / 'kamailio.log').read_text()[-2000:]}")
        yield process, port
    finally:
        stop_group(process)
        log.close()


def wait_for_sip(port: int, process: subprocess.Popen[str], timeout: float) -> bool:
    """Poll with OPTIONS until any SIP response arrives."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
        sock.settimeout(0.3)
        while time.monotonic() < deadline and process.poll() is None:
            probe = (
                f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:probe@127.0.0.1>\r\n"
                f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
            sock.sendto(probe.encode(), ("127.0.0.1", port))
            try:
                if sock.recv(65536).startswith(b"SIP/2.0 "):
                    return True
            except TimeoutError:
                continue
    return False


def report_server_errors(ctx: SuiteContext, log: Path) -> None:
    """Count the server's error lines and show the first one (a 500 to SIPp says nothing about why)."""
    if not log.exists():
        return
    errors = [line for line in log.read_text(errors="replace").splitlines() if '"level": "error"' in line]
    if errors:
        ctx.log(f"uc-edge logged {len(errors)} errors; the first ends: {errors[0][-700:]}")


# --- SIPp load runs ---------------------------------------------------------------------------------------


def parse_rates(text: str) -> list[int]:
    try:
        rates = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(f"--param rates={text!r} must be comma-separated integers") from None
    if not rates or any(r <= 0 or r > 50_000 for r in rates):
        raise BenchError(f"--param rates={text!r}: each rate must be within 1..50000")
    return sorted(rates)


def sipp_load_command(
    scenario: Path,
    target: str,
    *,
    scenario_args: Sequence[str] = (),
    local_port: int,
    rate: int,
    calls: int,
    limit: int,
    timeout: float,
    stat: Path,
    errors: Path,
    trace_args: Sequence[str] = (),
) -> list[str]:
    """A SIPp client on the load core offering ``calls`` at ``rate``/s to ``target`` with at most ``limit``
    outstanding, writing its statistics to ``stat`` (every second) and its errors to ``errors``."""
    return pinned(
        LOAD_CORE,
        [
            shutil.which("sipp") or "sipp",
            "-sf",
            str(scenario),
            *scenario_args,
            target,
            "-i",
            "127.0.0.1",
            "-p",
            str(local_port),
            "-r",
            str(rate),
            "-m",
            str(calls),
            "-l",
            str(limit),
            "-nostdin",
            "-buff_size",
            str(SOCKET_BUFFER),
            "-timeout",
            f"{int(timeout)}s",
            "-trace_stat",
            "-stf",
            str(stat),
            "-fd",
            "1",
            *trace_args,
            "-trace_err",
            "-error_file",
            str(errors),
        ],
    )


@dataclass
class SippRun:
    """What one SIPp client run left: its exit, its last statistics row and the server's CPU meanwhile."""

    exit_code: int
    wall_seconds: float
    cpu_percent: float  # of the server's processes over the run's wall time
    stats: dict[str, str]  # SIPp's last statistics row
    detail: str  # the end of SIPp's stderr and the start of its error file

    def counter(self, name: str) -> int:
        return int(self.stats.get(name, 0) or 0)

    @property
    def sipp_seconds(self) -> float:
        return stat_seconds(self.stats)


async def run_sipp_client(
    command: Sequence[str],
    *,
    cwd: Path,
    sipp_timeout: float,
    stat: Path,
    errors: Path,
    server_pids: Sequence[int],
) -> SippRun:
    """Run ``command`` (from ``sipp_load_command``) to its end, killed ``sipp_timeout`` + 15 s on."""
    cpu_before = cpu_seconds(server_pids)
    started = monotonic()
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), sipp_timeout + 15)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        stderr = b"SIPp overran its time limit"
    wall = monotonic() - started
    cpu = (cpu_seconds(server_pids) - cpu_before) / wall * 100 if wall > 0 else 0.0
    return SippRun(
        exit_code=process.returncode if process.returncode is not None else -1,
        wall_seconds=wall,
        cpu_percent=cpu,
        stats=last_stat_row(stat),
        detail=failure_detail(stderr, errors),
    )


def failure_detail(stderr: bytes, errors: Path) -> str:
    """The end of SIPp's stderr and the start of its error file (the first error explains the rest)."""
    detail = stderr.decode(errors="replace")[-500:]
    if errors.exists():
        detail += errors.read_text(errors="replace")[:800]
    return detail


def last_stat_row(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def stat_seconds(row: dict[str, str]) -> float:
    """Seconds from SIPp's start to its last statistics row (fields hold ``date<TAB>time<TAB>epoch``)."""
    try:
        start = float(row["StartTime"].split("\t")[-1])
        end = float(row["CurrentTime"].split("\t")[-1])
    except (KeyError, ValueError, IndexError):
        return 0.0
    return max(0.0, end - start)
