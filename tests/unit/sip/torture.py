"""Loader for the RFC 4475 torture messages kept as text under tests/data/rfc4475/."""

from __future__ import annotations

import json
import re
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "rfc4475"
_HEX = re.compile(r"<hex>([0-9A-Fa-f]*)</hex>")


def load_message(name: str) -> bytes:
    text = (DATA_DIR / f"{name}.txt").read_text(encoding="utf-8")
    out = bytearray()
    position = 0
    for match in _HEX.finditer(text):
        out += text[position : match.start()].replace("\n", "\r\n").encode("utf-8")
        out += bytes.fromhex(match.group(1))
        position = match.end()
    out += text[position:].replace("\n", "\r\n").encode("utf-8")
    data = bytes(out)
    if b"@AUTO@" in data:
        body = data.split(b"\r\n\r\n", 1)[1]
        data = data.replace(b"@AUTO@", str(len(body)).encode())
    return data


def expectations() -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = json.loads((DATA_DIR / "expected.json").read_text())
    return {name: entry for name, entry in table.items() if not name.startswith("_")}
