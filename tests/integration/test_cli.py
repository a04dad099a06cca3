"""The `uc-edge` command as an operator runs it: help, one clear line for what they can fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UC_EDGE = [sys.executable, "-m", "edge.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("UC_EDGE_")}
    full_env.update(env or {})
    return subprocess.run(
        [*UC_EDGE, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("serve",),
        ("migrate",),
        ("accounts",),
        ("accounts", "add"),
        ("doctor",),
        ("registrations",),
        ("consume",),
    ],
)
def test_every_command_has_help(args: tuple[str, ...]) -> None:
    result = run(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: uc-edge" in result.stdout


def test_bench_help_lists_suites() -> None:
    result = run("bench", "list")
    assert result.returncode == 0, result.stderr
    assert "sip-parse" in result.stdout


def test_wrong_setting_is_one_line_naming_it() -> None:
    result = run("doctor", env={"UC_EDGE_SIP_UDP_PORT": "five"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "uc-edge: invalid setting UC_EDGE_SIP_UDP_PORT='five': Input should be a valid integer, "
        "unable to parse string as an integer"
    ]


def test_unreachable_database_is_one_line_with_the_fix() -> None:
    result = run("migrate", env={"UC_EDGE_DB_DSN": "postgresql://uc_edge:uc_edge@127.0.0.1:1/postgres"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("uc-edge: cannot reach PostgreSQL at 127.0.0.1:1")
    assert "scripts/services up" in lines[0] and "UC_EDGE_DB_DSN" in lines[0]


def test_broken_migration_is_one_line_naming_the_file(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    (migrations / "accounts").mkdir(parents=True)
    (migrations / "accounts" / "0001_broken.sql").write_text("CREATE TABLE broken (id int PRIMARY KEY,;\n")
    for domain in ("calls", "cdr", "conferences"):
        (migrations / domain).mkdir()
    suffix = os.urandom(4).hex()
    env = {
        "UC_EDGE_MIGRATIONS_DIR": str(migrations),
        "UC_EDGE_DB_ACCOUNTS": f"uc_test_cli_{suffix}_a",
        "UC_EDGE_DB_CALLS": f"uc_test_cli_{suffix}_b",
        "UC_EDGE_DB_CDR": f"uc_test_cli_{suffix}_c",
        "UC_EDGE_DB_CONFERENCES": f"uc_test_cli_{suffix}_d",
    }
    try:
        result = run("migrate", "--skip-kafka", env=env)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "0001_broken.sql" in lines[0]
        assert "syntax error" in lines[0]
    finally:
        _drop_databases([env[k] for k in env if k.startswith("UC_EDGE_DB_")])


def _drop_databases(names: list[str]) -> None:
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect("postgresql://uc_edge:uc_edge@127.0.0.1:5432/postgres")
        try:
            for name in names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def test_doctor_reports_each_dependency_and_exits_zero_when_green() -> None:
    result = run("doctor", timeout=120)
    names = [line.split()[1] for line in result.stdout.splitlines() if line[:4] in ("ok  ", "FAIL")]
    for name in ("settings", "libopus", "postgres", "migrations", "redis", "kafka", "s3", "sip-udp", "http"):
        assert name in names, result.stdout
    assert result.returncode == (0 if "all green" in result.stdout else 1)


def test_doctor_says_how_to_fix_an_unreachable_dependency() -> None:
    result = run("doctor", env={"UC_EDGE_REDIS_URL": "redis://127.0.0.1:1/0"}, timeout=120)
    assert result.returncode == 1
    redis_line = next(line for line in result.stdout.splitlines() if " redis " in f" {line} ")
    assert redis_line.startswith("FAIL")
    assert "cannot reach Redis at 127.0.0.1:1" in redis_line
    assert "→ start it with `scripts/services up` or set UC_EDGE_REDIS_URL" in redis_line


def test_duplicate_sip_user_is_one_line() -> None:
    suffix = os.urandom(3).hex()
    user = f"dup{suffix}"
    try:
        assert run("accounts", "add", user, "--password", "s3cret-pass").returncode == 0
        again = run("accounts", "add", user, "--password", "s3cret-pass")
        assert again.returncode == 1
        assert again.stderr.strip().splitlines() == [
            f"uc-edge: SIP user '{user}' already exists in realm 'uc-edge'"
        ]
        listed = run("accounts", "list")
        assert user in listed.stdout
    finally:
        assert run("accounts", "remove", user).returncode == 0
    assert user not in run("accounts", "list").stdout
