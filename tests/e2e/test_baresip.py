"""baresip, a real softphone, registers with digest auth over UDP and TCP and unregisters when it quits."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from string import Template
from typing import Any

import pytest

from tests.e2e.conftest import DATA, Server, SipUsers, free_port_pair, kill_group, require_binary

pytestmark = pytest.mark.e2e

# baresip 1.0 (libre 1.x) fails with "Register: Function not implemented" when any challenge of the 401 is
# not MD5, even if an MD5 one is offered too: it needs MD5 alone (reported to the lead).
SERVER_ENV = {"UC_EDGE_SIP_DIGEST_ALGORITHMS": "MD5"}
PASSWORD = "e2e-baresip-secret"
REGISTER_TIMEOUT = 15.0


def write_config(directory: Path, *, user: str, transport: str, server_port: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    values = {
        "sip_port": free_port_pair(),
        "user": user,
        "password": PASSWORD,
        "transport": transport,
        "server_port": server_port,
    }
    for name in ("config", "accounts"):
        template = Template((DATA / "baresip" / f"{name}.template").read_text())
        (directory / name).write_text(template.substitute(values))
    return directory


async def wait_for_bindings(users: SipUsers, aor: str, present: bool, within: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        bindings = [json.loads(value) for value in (await users.bindings(aor)).values()]
        if bool(bindings) == present or time.monotonic() > deadline:
            return bindings
        await asyncio.sleep(0.2)


def start_phone(binary: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "w") as output:
        return subprocess.Popen(
            [binary, "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def register_and_quit(server: Server, users: SipUsers, tmp_path: Path, transport: str) -> None:
    binary = require_binary("baresip")
    (user,) = await users.create(1, PASSWORD, label=f"bs{transport}")
    aor = f"sip:{user}@127.0.0.1"
    config = write_config(tmp_path / "baresip", user=user, transport=transport, server_port=server.sip_port)
    log = tmp_path / "baresip.log"
    phone = start_phone(binary, config, log)
    try:
        bindings = await wait_for_bindings(users, aor, present=True, within=REGISTER_TIMEOUT)
        assert bindings, f"baresip did not register over {transport}: {log.read_text(errors='replace')}"
        (binding,) = bindings
        assert binding["received"]["transport"] == transport, binding
        contact = binding["contact_uri"].lower()
        # UDP is the default transport: baresip writes no transport parameter for it.
        expected = f"transport={transport}" in contact if transport != "udp" else "transport=" not in contact
        assert expected, binding
        assert aor in server.registrations()
        assert "200 OK" in log.read_text(errors="replace")

        # SIGTERM makes baresip stop its user agents, which unregisters (REGISTER with Expires: 0).
        phone.send_signal(signal.SIGTERM)
        await asyncio.to_thread(phone.wait, 15)
        remaining = await wait_for_bindings(users, aor, present=False, within=5)
        assert remaining == [], f"binding left after baresip quit: {remaining}"
    finally:
        kill_group(phone)


async def test_baresip_registers_over_udp_and_unregisters_on_quit(
    server: Server, sip_users: SipUsers, tmp_path: Path
) -> None:
    await register_and_quit(server, sip_users, tmp_path, "udp")


async def test_baresip_registers_over_tcp_and_unregisters_on_quit(
    server: Server, sip_users: SipUsers, tmp_path: Path
) -> None:
    await register_and_quit(server, sip_users, tmp_path, "tcp")
