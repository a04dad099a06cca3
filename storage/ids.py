"""Random version-4 UUIDs from a pool of ``os.urandom`` bytes.

``uuid.uuid4()`` makes one ``getrandom`` system call per id. A B2BUA call takes ~20 ids (call, legs,
routing attempt, CDR, ~13 event ids) and on a virtual machine each system call costs microseconds, so
it showed in profiles as a few per cent of a call. The pool reads 4 KiB (256 ids) at a time; the bytes
are the same kernel randomness, just fetched in bulk. A forked child starts a pool of its own, so parent
and child never hand out the same ids. (The SIP identifiers — branches, tags, Call-IDs — have their own
pool in signaling/sip/message.py: the SIP core imports nothing from storage.)
"""

from __future__ import annotations

import os
import uuid

_POOL_BYTES = 4096

# Bits uuid.UUID(version=4) overwrites: the version nibble (4) and the variant bits (RFC 4122).
_UUID4_FIXED_BITS = (0xF000 << 64) | (0xC000 << 48)
_UUID4_SET_BITS = (4 << 76) | (0x8000 << 48)


class RandomPool:
    """Sixteen random bytes at a time, read from ``os.urandom`` ``_POOL_BYTES`` at a time."""

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def reset(self) -> None:
        self._pool, self._at = b"", 0

    def take16(self) -> bytes:
        at = self._at
        if at + 16 > len(self._pool):
            self._pool, at = os.urandom(_POOL_BYTES), 0
        self._at = at + 16
        return self._pool[at : at + 16]


_pool = RandomPool()
os.register_at_fork(after_in_child=_pool.reset)


def _uuid4_int() -> int:
    return int.from_bytes(_pool.take16()) & ~_UUID4_FIXED_BITS | _UUID4_SET_BITS


def random_uuid4() -> uuid.UUID:
    """What ``uuid.uuid4()`` returns (random, version 4, RFC 4122 variant), without a system call per id."""
    return uuid.UUID(int=_uuid4_int())


def random_uuid4_text() -> str:
    """``str(random_uuid4())`` without building the ``UUID`` object (its constructor and ``__str__`` are
    most of what an event id cost)."""
    digits = f"{_uuid4_int():032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def random_hex(length: int) -> str:
    """``length`` (≤ 32) random hex digits, e.g. a digest cnonce."""
    if not 0 < length <= 32:
        raise ValueError(f"length must be within 1..32, got {length}")
    return _pool.take16().hex()[:length]
