"""A browser-like client registers over SIP-over-WebSocket (RFC 7118) with digest auth and stays reachable."""

from __future__ import annotations

import json
import os

import aiohttp
import pytest

from signaling.sip.digest import Challenge, DigestAlgorithm, build_authorization
from tests.e2e.conftest import DOMAIN, Server, SipUsers

pytestmark = pytest.mark.e2e

PASSWORD = "e2e-ws-secret"
WS_HOST = "df7jal23ls0d.invalid"

# Browsers on RFC 8760 stacks get SHA-256 offered first; this module checks that path.
SERVER_ENV = {"UC_EDGE_SIP_DIGEST_ALGORITHMS": "SHA-256,MD5"}


class SipOverWebSocket:
    """Just enough of a WebSocket UA: send one request, read the final response on the same socket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, user: str) -> None:
        self.ws = ws
        self.user = user
        self.call_id = os.urandom(8).hex()
        self.from_tag = os.urandom(4).hex()
        self.cseq = 0

    async def request(self, method: str, uri: str, extra: list[str]) -> tuple[int, dict[str, list[str]], str]:
        self.cseq += 1
        branch = "z9hG4bK" + os.urandom(6).hex()
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/WS {WS_HOST};branch={branch}",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@{DOMAIN}>;tag={self.from_tag}",
            f"To: <sip:{self.user}@{DOMAIN}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {method}",
            *extra,
            "Content-Length: 0",
            "",
            "",
        ]
        await self.ws.send_str("\r\n".join(lines))
        while True:
            message = await self.ws.receive(timeout=5)
            assert message.type == aiohttp.WSMsgType.TEXT, message
            status, headers, raw = parse_response(message.data)
            assert branch in headers["via"][0], raw
            if status >= 200:
                return status, headers, raw


def parse_response(text: str) -> tuple[int, dict[str, list[str]], str]:
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    assert head[0].startswith("SIP/2.0 "), text
    headers: dict[str, list[str]] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(head[0].split()[1]), headers, text


async def test_register_over_websocket_then_options_on_the_same_socket(
    server: Server, sip_users: SipUsers
) -> None:
    (user,) = await sip_users.create(1, PASSWORD, label="ws")
    aor = f"sip:{user}@{DOMAIN}"
    contact = f"Contact: <sip:{user}@{WS_HOST};transport=ws>;expires=300"
    registrar_uri = f"sip:{DOMAIN}"

    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"ws://127.0.0.1:{server.http_port}/sip", protocols=("sip",)) as ws,
    ):
        assert ws.protocol == "sip"
        ua = SipOverWebSocket(ws, user)

        status, headers, raw = await ua.request("REGISTER", registrar_uri, [contact])
        assert status == 401, raw
        challenges = [Challenge.parse(value) for value in headers["www-authenticate"]]
        assert {c.algorithm for c in challenges} >= {DigestAlgorithm.SHA_256}, raw
        strongest = challenges[0]  # the server offers the strongest first (RFC 8760)
        credentials = build_authorization(
            strongest,
            username=user,
            method="REGISTER",
            uri=registrar_uri,
            cnonce=os.urandom(8).hex(),
            password=PASSWORD,
        )
        status, headers, raw = await ua.request(
            "REGISTER", registrar_uri, [contact, f"Authorization: {credentials.header_value()}"]
        )
        assert status == 200, raw
        assert any(f"sip:{user}@{WS_HOST}" in value for value in headers["contact"]), raw

        bindings = await sip_users.bindings(aor)
        assert len(bindings) == 1, bindings
        (stored,) = (json.loads(value) for value in bindings.values())
        assert WS_HOST in stored["contact_uri"]
        assert stored["received"]["transport"] == "ws", stored
        assert aor in server.registrations()

        status, _headers, raw = await ua.request("OPTIONS", f"sip:{DOMAIN}", [])
        assert status == 200, raw
