"""scripts/services on spare ports: `up` starts what is missing, is idempotent, `down` stops only that."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def spare_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def services(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "services"), command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_up_is_idempotent_and_down_stops_what_up_started(tmp_path: Path) -> None:
    ports = {name: spare_port() for name in ("redis", "s3", "filer", "kafka")}
    env = {
        "UC_EDGE_SERVICES_DIR": str(tmp_path / "state"),
        "UC_EDGE_VENV": str(ROOT / ".venv"),
        "UC_EDGE_REDIS_PORT": str(ports["redis"]),
        "UC_EDGE_S3_PORT": str(ports["s3"]),
        "UC_EDGE_S3_FILER_PORT": str(ports["filer"]),
        "UC_EDGE_KAFKA_PORT": str(ports["kafka"]),
        "UC_EDGE_KAFKA_ENGINE": "memory",
    }
    try:
        first = services("up", env)
        assert first.returncode == 0, first.stderr
        for line in ("postgres  up", "redis     up", "s3        up", "kafka     up"):
            assert line in first.stdout
        started = (tmp_path / "state" / "started").read_text().split()
        assert set(started) == {"redis", "s3", "kafka"}  # PostgreSQL was already running: not ours to stop
        assert all(port_open(ports[name]) for name in ("redis", "s3", "kafka"))

        pids = {name: (tmp_path / "state" / f"{name}.pid").read_text().strip() for name in ("s3", "kafka")}
        again = services("up", env)
        assert again.returncode == 0, again.stderr
        assert {name: (tmp_path / "state" / f"{name}.pid").read_text().strip() for name in pids} == pids
    finally:
        down = services("down", env)
    assert down.returncode == 0, down.stderr
    assert not any(port_open(ports[name]) for name in ("redis", "s3", "kafka"))
    status = services("status", env)
    assert status.returncode == 1
    assert "postgres  up" in status.stdout and "redis     down" in status.stdout
