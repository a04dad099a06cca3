"""SIPp registers a CSV of users with digest auth against the real server; a wrong password is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import DATA, DOMAIN, ROOT, Server, SipUsers, run_sipp_uac

pytestmark = pytest.mark.e2e

# SIPp 3.6 answers only the first challenge and only with MD5.
SERVER_ENV = {"UC_EDGE_SIP_DIGEST_ALGORITHMS": "MD5"}
USERS = 50
PASSWORD = "e2e-sipp-secret"
REGISTER_SCENARIO = ROOT / "bench" / "peers" / "register_digest.xml"


def users_csv(path: Path, users: list[str], password: str) -> Path:
    lines = ["SEQUENTIAL"]
    for user in users:
        lines.append(f"{user};{password};{DOMAIN};[authentication username={user} password={password}]")
    path.write_text("\n".join(lines) + "\n")
    return path


def sipp(server: Server, scenario: Path, csv: Path, calls: int, workdir: Path) -> tuple[int, str]:
    errors = workdir / "errors.log"
    result = run_sipp_uac(
        server, scenario, csv, workdir, calls=calls, rate=100, limit=50, extra=["-error_file", str(errors)]
    )
    detail = result.stdout[-3000:] + result.stderr[-2000:]
    if errors.exists():
        detail += errors.read_text(errors="replace")[-3000:]
    return result.returncode, detail


async def test_sipp_registers_every_user_with_digest_auth(
    server: Server, sip_users: SipUsers, tmp_path: Path
) -> None:
    users = await sip_users.create(USERS, PASSWORD, label="sipp")
    csv = users_csv(tmp_path / "users.csv", users, PASSWORD)
    before = server.metrics()

    code, detail = sipp(server, REGISTER_SCENARIO, csv, USERS, tmp_path)

    assert code == 0, f"SIPp reported failed calls: {detail}"
    listing = server.registrations()
    for user in users:
        assert f"sip:{user}@{DOMAIN}\t" in listing, f"{user} missing from `uc-edge registrations`"
    after = server.metrics()
    assert after["uc_sip_registrations_total"] - before.get("uc_sip_registrations_total", 0) == USERS
    assert after["uc_sip_auth_ok_total"] - before.get("uc_sip_auth_ok_total", 0) == USERS


async def test_wrong_password_is_challenged_again(
    server: Server, sip_users: SipUsers, tmp_path: Path
) -> None:
    (user,) = await sip_users.create(1, PASSWORD, label="wrong")
    csv = users_csv(tmp_path / "wrong.csv", [user], "not-the-password")
    before = server.metrics()

    code, detail = sipp(server, DATA / "register_wrong_password.xml", csv, 1, tmp_path)

    assert code == 0, f"the wrong password was not answered with a second 401: {detail}"
    assert f"sip:{user}@{DOMAIN}" not in server.registrations()
    after = server.metrics()
    assert after["uc_sip_auth_invalid_total"] - before.get("uc_sip_auth_invalid_total", 0) == 1
