"""`uc-edge serve` with a registering trunk: bound at a real Kamailio while it runs, unbound on SIGTERM.

Needs the node wiring (``SipNode`` starts and stops :class:`edge.trunk_registration.TrunkRegistrations`,
``/api/v1/node`` lists ``trunk_registrations``).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server, running_server, wait_until
from tests.e2e.test_trunk_registration import HOST, PASSWORD, USER, kamailio

pytestmark = pytest.mark.e2e


def trunk_registrations(server: Server) -> list[dict[str, Any]]:
    status, body = server.http("/api/v1/node")
    assert status == 200, body
    info = json.loads(body)
    assert "trunk_registrations" in info, f"/api/v1/node has no trunk_registrations: {info}"
    found: list[dict[str, Any]] = info["trunk_registrations"]
    return found


def metric(server: Server, name: str, labels: str) -> float | None:
    status, body = server.http("/metrics")
    assert status == 200
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", body.decode(), re.MULTILINE)
    return float(match[1]) if match else None


def test_serve_registers_its_trunk_and_unregisters_on_sigterm(tmp_path: Path) -> None:
    with kamailio(tmp_path, MAX_EXPIRES=4) as registrar:
        trunks = [
            {
                "name": "carrier",
                "host": HOST,
                "port": registrar.port,
                "username": USER,
                "password": PASSWORD,
                "register": True,
            }
        ]
        overrides = {"UC_EDGE_SIP_TRUNKS": json.dumps(trunks)}
        with running_server(overrides, tmp_path / "serve.log") as server:
            assert wait_until(lambda: trunk_registrations(server)[0]["state"] == "registered", 20), (
                trunk_registrations(server),
                server.stderr_tail(),
            )
            (registration,) = trunk_registrations(server)
            assert registration["aor"] == f"sip:{USER}@{HOST}" and registration["expires"] == 4
            assert f"sip:{USER}@{HOST}:{server.sip_port}" in registrar.lookup()
            relayed = registrar.options_to_user()
            assert (
                relayed is not None and relayed.code == 200
            )  # Kamailio reached the node through the binding

            listed = server.cli("registrations", "--trunks").stdout
            assert listed.startswith(f"carrier\tregistered\tsip:{USER}@{HOST}\tstatus 200"), listed

            registered = 'state="registered",trunk="carrier"'
            assert metric(server, "uc_sip_trunk_registration_state", registered) == 1.0
            # refreshed every 2 s (Kamailio grants 4 s): a few attempts, none failed
            assert wait_until(
                lambda: (
                    (metric(server, "uc_sip_trunk_registration_attempts_total", 'trunk="carrier"') or 0) >= 3
                ),
                30,
            )
            assert metric(server, "uc_sip_trunk_registration_failures_total", 'trunk="carrier"') == 0.0

            server.process.send_signal(signal.SIGTERM)
            try:
                assert server.process.wait(timeout=30) == 0
            except subprocess.TimeoutExpired:
                pytest.fail(f"uc-edge did not stop: {server.stderr_tail()}")
        assert "AOR not found" in registrar.lookup()
        gone = registrar.options_to_user()
        assert gone is not None and gone.code == 404
        log = (tmp_path / "serve.log").read_text()
        assert "trunk registration" in log and '"state": "stopped"' in log
