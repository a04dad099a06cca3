"""``uc-edge doctor``: every dependency checked, one line each, with the fix for what is wrong."""

from __future__ import annotations

import ctypes.util
import socket
import sys

from edge.health import Check, check_kafka, check_postgres, check_redis, check_s3
from edge.settings import Settings


def check_python() -> Check:
    # Below 3.11 this package does not import at all, so there is only the version to report.
    version = ".".join(map(str, sys.version_info[:3]))
    return Check("python", True, f"Python {version} ({sys.executable})")


def check_libopus() -> Check:
    found = ctypes.util.find_library("opus")
    if not found:
        return Check("libopus", False, "libopus not found", "apt-get install libopus0")
    return Check("libopus", True, f"{found} loadable")


def check_port_free(name: str, host: str, port: int, kind: int) -> Check:
    """A port the server will bind: free, or already held (perhaps by a running uc-edge)."""
    if port == 0:
        return Check(name, True, "ephemeral port")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
            return Check(
                name,
                True,
                f"{proto} {host}:{port} is in use ({exc.strerror}) — fine if uc-edge is running, "
                "otherwise another program holds it",
            )
    return Check(name, True, f"{host}:{port} free")


async def check_migrations(settings: Settings) -> Check:
    try:
        from storage.postgres.migrate import migration_status

        status = await migration_status(
            settings.db_dsn, settings.domain_databases, migrations_dir=settings.migrations_dir
        )
    except Exception as exc:
        return Check("migrations", False, f"cannot read migration status ({exc})", "run `uc-edge migrate`")
    pending = {domain: names for domain, names in status.pending.items() if names}
    if pending:
        listed = "; ".join(f"{d}: {', '.join(n)}" for d, n in pending.items())
        return Check("migrations", False, f"pending migrations — {listed}", "run `uc-edge migrate`")
    return Check("migrations", True, "all domain databases at the latest migration")


async def run_doctor(settings: Settings, topics: tuple[str, ...]) -> int:
    checks: list[Check] = [Check("settings", True, "valid"), check_python(), check_libopus()]
    postgres = await check_postgres(settings)
    checks.append(postgres)
    if postgres.ok:
        checks.append(await check_migrations(settings))
    checks.append(await check_redis(settings))
    checks.append(await check_kafka(settings, topics))
    checks.append(await check_s3(settings))
    checks.append(check_port_free("sip-udp", settings.sip_host, settings.sip_udp_port, socket.SOCK_DGRAM))
    checks.append(check_port_free("sip-tcp", settings.sip_host, settings.sip_tcp_port, socket.SOCK_STREAM))
    checks.append(check_port_free("http", settings.http_host, settings.http_port, socket.SOCK_STREAM))

    width = max(len(c.name) for c in checks)
    for check in checks:
        mark = "ok  " if check.ok else "FAIL"
        line = f"{mark} {check.name.ljust(width)}  {check.detail}"
        if not check.ok and check.fix:
            line += f"  → {check.fix}"
        print(line)
    failed = [c.name for c in checks if not c.ok]
    if failed:
        print(f"\n{len(failed)} problem(s): {', '.join(failed)}")
        return 1
    print("\nall green")
    return 0
