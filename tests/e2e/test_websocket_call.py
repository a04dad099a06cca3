"""A call from a SIPp phone on UDP to a browser-like user registered over SIP-over-WebSocket (RFC 7118):
the B2BUA sends the INVITE down the socket the user registered from (its Contact host is `.invalid`),
with a WS Via and a ;transport=ws Contact, and the whole dialog (180, 200, ACK, BYE) runs over it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest

from signaling.sip.digest import Challenge, build_authorization
from tests.e2e.conftest import DOMAIN, ROOT, Server, SipUsers, run_sipp_uac
from tests.e2e.test_websocket_register import WS_HOST, SipOverWebSocket, parse_response

pytestmark = pytest.mark.e2e

SERVER_ENV = {"UC_EDGE_SIP_DIGEST_ALGORITHMS": "MD5"}  # SIPp answers only an MD5 challenge
PASSWORD = "e2e-ws-call-secret"
UAC_SCENARIO = ROOT / "bench" / "peers" / "call_uac_auth.xml"


def parse_request(text: str) -> tuple[str, str, dict[str, list[str]]]:
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    method, uri, version = head[0].split(" ", 2)
    assert version == "SIP/2.0", text
    headers: dict[str, list[str]] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return method, uri, headers


def answer(headers: dict[str, list[str]], status: str, to_tag: str, extra: list[str], body: str = "") -> str:
    """A response echoing the request's Via, From, Call-ID and CSeq, as a UAS must (RFC 3261 8.2.6)."""
    to = headers["to"][0] if ";tag=" in headers["to"][0] else f"{headers['to'][0]};tag={to_tag}"
    lines = [
        f"SIP/2.0 {status}",
        *(f"Via: {via}" for via in headers["via"]),
        f"From: {headers['from'][0]}",
        f"To: {to}",
        f"Call-ID: {headers['call-id'][0]}",
        f"CSeq: {headers['cseq'][0]}",
        *extra,
        f"Content-Length: {len(body.encode())}",
        "",
        body,
    ]
    return "\r\n".join(lines)


def call_with_sipp(server: Server, csv: Path, workdir: Path) -> tuple[int, str]:
    result = run_sipp_uac(server, UAC_SCENARIO, csv, workdir, calls=1)
    errors = "".join(p.read_text(errors="replace")[-3000:] for p in workdir.glob("*errors.log"))
    return result.returncode, result.stdout[-2000:] + errors


async def test_udp_phone_calls_a_websocket_user(server: Server, sip_users: SipUsers, tmp_path: Path) -> None:
    caller, callee = await sip_users.create(2, PASSWORD, label="wscall")
    csv = tmp_path / "call.csv"
    csv.write_text(
        f"SEQUENTIAL\n{caller};{callee};{DOMAIN};[authentication username={caller} password={PASSWORD}]\n"
    )
    contact_uri = f"sip:{callee}@{WS_HOST};transport=ws"
    registrar_uri = f"sip:{DOMAIN}"

    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"ws://127.0.0.1:{server.http_port}/sip", protocols=("sip",)) as ws,
    ):
        ua = SipOverWebSocket(ws, callee)
        contact = f"Contact: <{contact_uri}>;expires=300"
        status, headers, raw = await ua.request("REGISTER", registrar_uri, [contact])
        assert status == 401, raw
        credentials = build_authorization(
            Challenge.parse(headers["www-authenticate"][0]),
            username=callee,
            method="REGISTER",
            uri=registrar_uri,
            cnonce=os.urandom(8).hex(),
            password=PASSWORD,
        )
        status, _, raw = await ua.request(
            "REGISTER", registrar_uri, [contact, f"Authorization: {credentials.header_value()}"]
        )
        assert status == 200, raw

        sipp = asyncio.create_task(asyncio.to_thread(call_with_sipp, server, csv, tmp_path))
        seen: list[str] = []
        to_tag = os.urandom(4).hex()
        try:
            while True:
                message = await ws.receive(timeout=20)
                assert message.type == aiohttp.WSMsgType.TEXT, message
                text = message.data
                if text.startswith("SIP/2.0"):
                    parse_response(text)  # nothing of ours expects a response here; must still parse
                    continue
                method, uri, headers = parse_request(text)
                seen.append(method)
                if method == "INVITE":
                    assert uri == contact_uri, text
                    top_via = headers["via"][0]
                    assert top_via.startswith("SIP/2.0/WS "), text
                    assert any(";transport=ws" in c for c in headers["contact"]), text
                    port = next(line for line in text.split("\r\n") if line.startswith("m=audio")).split()[1]
                    assert int(port) > 0, text
                    sdp = (
                        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                        "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
                    )
                    me = f"Contact: <{contact_uri}>"
                    await ws.send_str(answer(headers, "180 Ringing", to_tag, [me]))
                    await ws.send_str(
                        answer(headers, "200 OK", to_tag, [me, "Content-Type: application/sdp"], sdp)
                    )
                elif method == "BYE":
                    await ws.send_str(answer(headers, "200 OK", to_tag, []))
                    break
                elif method != "ACK":
                    await ws.send_str(answer(headers, "200 OK", to_tag, []))
        finally:
            returncode, detail = await sipp
        assert returncode == 0, detail + server.stderr_tail()
        assert seen[:2] == ["INVITE", "ACK"] and seen[-1] == "BYE", seen
