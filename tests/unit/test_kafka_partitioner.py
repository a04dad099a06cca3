"""The publisher's memoised partitioner places every key where aiokafka's DefaultPartitioner does."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.kafka.publisher import MemoizedKeyPartitioner

partition_lists = st.lists(st.integers(0, 500), min_size=1, max_size=64, unique=True).map(sorted)


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(st.binary(max_size=80), min_size=1, max_size=40),
    partition_lists=st.lists(partition_lists, min_size=1, max_size=4),
    max_keys=st.integers(1, 16),
)
def test_same_partition_as_the_default_partitioner(
    keys: list[bytes], partition_lists: list[list[int]], max_keys: int
) -> None:
    # The same partitioner sees keys again and the partition count change (a topic that grew), and
    # its table overflows (small max_keys): none of it may change the answer.
    memoized = MemoizedKeyPartitioner(max_keys=max_keys)
    default = DefaultPartitioner()
    for partitions in partition_lists:
        for key in keys + keys:
            assert memoized(key, partitions, partitions) == default(key, partitions, partitions)


def test_known_placements_of_call_id_keys() -> None:
    # Fixed points of the Java client's murmur2 placement, checked against DefaultPartitioner too.
    memoized = MemoizedKeyPartitioner()
    default = DefaultPartitioner()
    rng = random.Random(5)
    for _ in range(2000):
        key = f"{rng.getrandbits(128):032x}"
        partitions = list(range(rng.randint(1, 12)))
        assert memoized(key.encode(), partitions, []) == default(key.encode(), partitions, [])
    assert memoized(b"", [0, 1, 2], [0, 1, 2]) == default(b"", [0, 1, 2], [0, 1, 2])


def test_memory_stays_bounded() -> None:
    memoized = MemoizedKeyPartitioner(max_keys=100)
    for i in range(1000):
        memoized(str(i).encode(), [0, 1, 2], [0, 1, 2])
    assert len(memoized._positive_hash_by_key) <= 100


def test_a_key_none_goes_to_an_available_partition_or_any_when_none_is() -> None:
    memoized = MemoizedKeyPartitioner()
    assert {memoized(None, [0, 1, 2, 3], [2]) for _ in range(50)} == {2}
    assert {memoized(None, [0, 1, 2, 3], []) for _ in range(200)} == {0, 1, 2, 3}


def test_refuses_an_empty_table() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        MemoizedKeyPartitioner(max_keys=0)
