"""SIPp UAC → uc-edge (B2BUA, digest auth) → SIPp UAS, through a real ``uc-edge serve`` process.

The UAS is registered directly in the server's Redis location store (one binding to its UDP port);
the UAC authenticates with proxy digest (407). Calls carry SDP but SIPp sends no RTP here, so the media
plane is exercised only as far as endpoint creation, SDP anchoring, configure/connect and teardown —
not audio. Every call must succeed; the rows in call_sessions and cdr_records are checked after.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from storage.ports import Binding
from storage.ports import TransportAddress as PortsAddress
from storage.redis.location import RedisLocationStore
from tests.e2e.conftest import (
    DOMAIN,
    E2E_REDIS_URL,
    ROOT,
    Server,
    SipUsers,
    free_port,
    kill_group,
    require_binary,
    run_sipp_uac,
)

pytestmark = pytest.mark.e2e

SERVER_ENV = {"UC_EDGE_SIP_DIGEST_ALGORITHMS": "MD5"}  # SIPp answers only an MD5 challenge
PASSWORD = "e2e-call-secret"
CALLS = 20
UAC_SCENARIO = ROOT / "bench" / "peers" / "call_uac_auth.xml"
CALLS_DSN = "postgresql://uc_edge:uc_edge@127.0.0.1:5432/uc_calls"
CDR_DSN = "postgresql://uc_edge:uc_edge@127.0.0.1:5432/uc_cdr"


async def register_directly(user: str, port: int) -> None:
    client = aioredis.from_url(E2E_REDIS_URL)
    try:
        aor = f"sip:{user}@{DOMAIN}"
        binding = Binding(
            aor=aor,
            contact_uri=f"sip:{user}@127.0.0.1:{port}",
            expires_at=time.time() + 600,
            received=PortsAddress("udp", "127.0.0.1", port),
        )
        await RedisLocationStore(client).save(aor, [binding], [], time.time())
    finally:
        await client.aclose()


def run_calls(sipp: str, server: Server, csv: Path, uas_port: int, workdir: Path) -> None:
    """SIPp UAS in the background, SIPp UAC in front; every call must succeed."""
    uas = subprocess.Popen(
        [sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-m", str(CALLS), "-nostdin", "-bg"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        result = run_sipp_uac(
            server, UAC_SCENARIO, csv, workdir, calls=CALLS, rate=10, limit=20, sipp_timeout=60
        )
    finally:
        kill_group(uas, grace=2)
    errors = "".join(p.read_text(errors="replace")[-3000:] for p in workdir.glob("*errors.log"))
    assert result.returncode == 0, result.stdout[-3000:] + errors + server.stderr_tail()


async def test_sipp_calls_through_the_b2bua(server: Server, sip_users: SipUsers, tmp_path: Path) -> None:
    sipp = require_binary("sipp")
    caller, callee = await sip_users.create(2, PASSWORD, label="call")
    uas_port = free_port()
    await register_directly(callee, uas_port)
    csv = tmp_path / "calls.csv"
    csv.write_text(
        f"SEQUENTIAL\n{caller};{callee};{DOMAIN};[authentication username={caller} password={PASSWORD}]\n"
    )
    run_calls(sipp, server, csv, uas_port, tmp_path)

    calls = await asyncpg.connect(CALLS_DSN)
    cdrs = await asyncpg.connect(CDR_DSN)
    try:
        deadline = time.monotonic() + 10
        while True:
            rows = await calls.fetch(
                "SELECT call_id, status, termination_cause FROM call_sessions WHERE from_uri LIKE $1",
                f"%{caller}@%",
            )
            if (
                len(rows) == CALLS and all(r["status"] == "ended" for r in rows)
            ) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert len(rows) == CALLS
        assert {(r["status"], r["termination_cause"]) for r in rows} == {("ended", "normal_clearing")}
        ids = [r["call_id"] for r in rows]
        cdr_rows = await cdrs.fetch(
            "SELECT termination_cause FROM cdr_records WHERE call_id = ANY($1::uuid[])", ids
        )
        assert len(cdr_rows) == CALLS
    finally:
        await calls.close()
        await cdrs.close()
