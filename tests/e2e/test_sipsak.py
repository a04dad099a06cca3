"""sipsak, a SIP swiss-army knife, against the running server: OPTIONS pings and hand-written requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Server, free_port, require_binary, run_bounded

pytestmark = pytest.mark.e2e

# sipsak's exit codes (man sipsak): 0 a 200 arrived, 1 another final response, 3 no answer / socket error.
GOT_200, GOT_OTHER_FINAL = 0, 1


def sipsak(server: Server, *args: str) -> tuple[int, str]:
    binary = require_binary("sipsak")
    result = run_bounded(
        [
            binary,
            "-s",
            f"sip:127.0.0.1:{server.sip_port}",
            "-H",
            "127.0.0.1",
            "-l",
            str(free_port()),
            "-vv",
            *args,
        ],
        timeout=20,
    )
    return result.returncode, result.stdout + result.stderr


def test_options_ping_gets_200(server: Server) -> None:
    code, output = sipsak(server)
    assert code == GOT_200, output
    assert "SIP/2.0 200 OK" in output
    assert "Allow: " in output and "REGISTER" in output


def test_options_ping_over_tcp_gets_200(server: Server) -> None:
    code, output = sipsak(server, "-E", "tcp")
    assert code == GOT_200, output
    assert "SIP/2.0 200 OK" in output


def write_request(path: Path, method: str, port: int, content_length: str = "0", body: str = "") -> Path:
    # sipsak inserts its own Via on top of a file's request and adds the missing CRs.
    path.write_text(
        f"{method} sip:127.0.0.1:{port} SIP/2.0\n"
        "From: <sip:sipsak@127.0.0.1>;tag=e2e1\n"
        f"To: <sip:127.0.0.1:{port}>\n"
        f"Call-ID: {method.lower()}-{path.stem}@127.0.0.1\n"
        f"CSeq: 1 {method}\n"
        "Max-Forwards: 70\n"
        f"Content-Length: {content_length}\n"
        "\n"
        f"{body}"
    )
    return path


def test_unknown_method_gets_501(server: Server, tmp_path: Path) -> None:
    request = write_request(tmp_path / "frob.sip", "FROBNICATE", server.sip_port)
    code, output = sipsak(server, "-f", str(request))
    assert code == GOT_OTHER_FINAL, output
    assert "SIP/2.0 501 Not Implemented" in output
    assert "Allow: " in output


def test_content_length_beyond_the_datagram_gets_400(server: Server, tmp_path: Path) -> None:
    request = write_request(
        tmp_path / "short.sip", "OPTIONS", server.sip_port, content_length="500", body="x"
    )
    before = server.metrics()
    code, output = sipsak(server, "-f", str(request))
    assert code == GOT_OTHER_FINAL, output
    assert "SIP/2.0 400 " in output
    after = server.metrics()
    assert after["uc_sip_bad_requests_sent_total"] > before["uc_sip_bad_requests_sent_total"]
