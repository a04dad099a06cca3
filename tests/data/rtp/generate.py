"""Regenerate the RTP/RTCP test vectors in this directory: ``python tests/data/rtp/generate.py``.

Built octet by octet with ``struct`` from the RFC layouts, independently of ``media.rtp``/``media.rtcp``,
so the round-trip tests compare our parser and serialiser against a second implementation.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

HERE = Path(__file__).parent


def ulaw_tone(samples: int) -> bytes:
    """G.711 mu-law of a 1 kHz tone at 8 kHz (the payload only needs to look realistic)."""
    out = bytearray()
    for n in range(samples):
        value = int(8000 * math.sin(2 * math.pi * 1000 * n / 8000))
        sign = 0x80 if value >= 0 else 0
        magnitude = min(abs(value) + 0x84, 0x7FFF)
        exponent = max(0, magnitude.bit_length() - 8)
        mantissa = (magnitude >> (exponent + 3)) & 0x0F
        out.append(~(sign | (exponent << 4) | mantissa) & 0xFF)
    return bytes(out)


def rtp(first: int, second: int, seq: int, ts: int, ssrc: int, rest: bytes) -> bytes:
    return struct.pack("!BBHII", first, second, seq, ts, ssrc) + rest


VECTORS: dict[str, bytes] = {
    # PCMU, marker set (talkspurt start), sequence at the wrap edge.
    "pcmu_marker.bin": rtp(0x80, 0x80 | 0, 0xFFFF, 0x0001_F400, 0x1234_5678, ulaw_tone(160)),
    # Opus (PT 111) with 2 CSRCs, an RFC 8285 one-byte extension (ssrc-audio-level id 1, mid id 3 = "0"),
    # and 4 octets of padding.
    "opus_csrc_ext_padding.bin": rtp(
        0x80 | 0x20 | 0x10 | 2,
        111,
        4242,
        960 * 50,
        0xCAFE_BABE,
        struct.pack("!II", 0x1111_1111, 0x2222_2222)
        + struct.pack("!HH", 0xBEDE, 2)
        + bytes([0x10, 0x85, 0x30, ord("0"), 0x00, 0x00, 0x00, 0x00])
        + bytes(range(40))
        + b"\x00\x00\x00\x04",
    ),
    # RFC 8285 two-byte extension (id 20, 3 octets; id 2, 0 octets) and an 8-octet payload.
    "twobyte_ext.bin": rtp(
        0x90,
        96,
        1,
        123456,
        0x0A0B_0C0D,
        struct.pack("!HH", 0x1000, 2) + bytes([20, 3, 1, 2, 3, 2, 0, 0]) + b"payload!",
    ),
    # telephone-event (PT 101): digit 5, E bit, volume 10, duration 800.
    "telephone_event_end.bin": rtp(0x80, 101, 77, 16000, 0x1234_5678, struct.pack("!BBH", 5, 0x80 | 10, 800)),
}


def rtcp_header(count: int, packet_type: int, body: bytes, padding: int = 0) -> bytes:
    total = 4 + len(body) + padding
    first = 0x80 | (0x20 if padding else 0) | count
    pad = bytes(padding - 1) + bytes([padding]) if padding else b""
    return struct.pack("!BBH", first, packet_type, total // 4 - 1) + body + pad


def report_block(
    ssrc: int, fraction: int, lost: int, highest: int, jitter: int, lsr: int, dlsr: int
) -> bytes:
    return (
        struct.pack("!IB", ssrc, fraction)
        + lost.to_bytes(3, "big", signed=True)
        + struct.pack("!IIII", highest, jitter, lsr, dlsr)
    )


def sdes_cname(ssrc: int, cname: bytes) -> bytes:
    chunk = struct.pack("!I", ssrc) + bytes([1, len(cname)]) + cname + b"\x00"
    chunk += bytes(-len(chunk) % 4)
    return rtcp_header(1, 202, chunk)


VECTORS.update(
    {
        # SR with one report block, then SDES CNAME.
        "rtcp_sr_sdes.bin": rtcp_header(
            1,
            200,
            struct.pack("!IQIII", 0x1234_5678, 0xE8F0_0000_8000_0000, 160_000, 500, 80_000)
            + report_block(0xCAFE_BABE, 12, 37, 0x0001_0010, 55, 0x0000_8000, 0x0001_0000),
        )
        + sdes_cname(0x1234_5678, b"uc-edge@example.invalid"),
        # RR with two blocks (one with negative cumulative loss), SDES, BYE with reason.
        "rtcp_rr_sdes_bye.bin": rtcp_header(
            2,
            201,
            struct.pack("!I", 0x0A0B_0C0D)
            + report_block(0x1111_1111, 0, -3, 70000, 12, 0, 0)
            + report_block(0x2222_2222, 255, 8_388_607, 0xFFFF_FFFF, 4096, 0xDEAD_BEEF, 0x10),
        )
        + sdes_cname(0x0A0B_0C0D, b"leg-b")
        + rtcp_header(1, 203, struct.pack("!I", 0x0A0B_0C0D) + bytes([8]) + b"shutdown" + bytes(3)),
        # APP (subtype 3, name "UCED"), PSFB PLI passthrough (unknown type 206), padded RR last.
        "rtcp_app_pli_padding.bin": rtcp_header(3, 204, struct.pack("!I", 1) + b"UCED" + b"\x01\x02\x03\x04")
        + rtcp_header(1, 206, struct.pack("!II", 1, 2))
        + rtcp_header(0, 201, struct.pack("!I", 1), padding=8),
    }
)


if __name__ == "__main__":
    for name, data in VECTORS.items():
        (HERE / name).write_bytes(data)
        print(f"{name}: {len(data)} octets")
