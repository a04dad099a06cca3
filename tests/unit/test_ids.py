"""Pooled random ids are the random version-4 UUIDs uuid.uuid4() makes, fresh in a forked child too."""

from __future__ import annotations

import os
import uuid

import pytest

from storage.ids import random_hex, random_uuid4, random_uuid4_text

FIXED_BITS = (0xF000 << 64) | (0xC000 << 48)  # version nibble and variant bits
SET_BITS = (4 << 76) | (0x8000 << 48)


def _check_random_version_4(values: list[int]) -> None:
    assert len(set(values)) == len(values)
    union, common = 0, (1 << 128) - 1
    for value in values:
        union, common = union | value, common & value
    # Only the version and variant bits are fixed (as uuid.uuid4() fixes them); every other bit varies.
    assert union | FIXED_BITS == (1 << 128) - 1
    assert common == SET_BITS


def test_text_ids_are_random_version_4_uuids_in_canonical_text() -> None:
    ids = [random_uuid4_text() for _ in range(2000)]  # several refills of the pool
    parsed = [uuid.UUID(text) for text in ids]
    assert all(
        (p.version, p.variant, str(p)) == (4, uuid.RFC_4122, t) for p, t in zip(parsed, ids, strict=True)
    )
    _check_random_version_4([p.int for p in parsed])


def test_uuid_objects_are_random_version_4() -> None:
    ids = [random_uuid4() for _ in range(2000)]
    assert all(isinstance(u, uuid.UUID) and (u.version, u.variant) == (4, uuid.RFC_4122) for u in ids)
    _check_random_version_4([u.int for u in ids])


def test_random_hex_has_the_length_asked_and_varies() -> None:
    tokens = [random_hex(16) for _ in range(500)]
    assert all(len(t) == 16 and int(t, 16) >= 0 for t in tokens)
    assert len(set(tokens)) == len(tokens)
    for bad in (0, 33):
        with pytest.raises(ValueError, match=r"within 1\.\.32"):
            random_hex(bad)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    random_uuid4_text()  # the parent's pool is filled: a child that kept it would hand out its next ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        os.close(read)
        os.write(write, ",".join(random_uuid4_text() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split(",")
    os.waitpid(pid, 0)
    parent = [random_uuid4_text() for _ in range(4)]
    assert len(child) == 4
    assert not set(child) & set(parent)
