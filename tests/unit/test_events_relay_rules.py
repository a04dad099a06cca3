"""Pure rules of the outbox relay: what may be marked sent after a partial failure, how retries back off."""

from __future__ import annotations

import random

import pytest

from storage.kafka.backoff import Backoff
from storage.kafka.relay import (
    ClaimCandidate,
    ClaimedRow,
    OutboxEvent,
    RelayConfig,
    claimable,
    events_json,
    settle,
)


def event(key: str, n: int = 0) -> OutboxEvent:
    return OutboxEvent(
        event_id=f"e-{key}-{n}",
        topic="call-events",
        partition_key=key,
        event_type="call.ended",
        envelope='{"a":1}',
    )


def row(row_id: int, *keys: str) -> ClaimedRow:
    return ClaimedRow(id=row_id, events=tuple(event(key, n) for n, key in enumerate(keys)))


def test_all_acknowledged_rows_are_sent() -> None:
    rows = [row(1, "a", "b"), row(2, "b"), row(3, "a")]
    settlement = settle(rows, [None, None, None, None])
    assert [r.id for r in settlement.sent] == [1, 2, 3]
    assert settlement.unsent == [] and settlement.events_sent == 4


def test_after_a_failure_later_events_of_that_key_are_sent_again_even_if_acknowledged() -> None:
    rows = [row(1, "a", "b"), row(2, "a", "c"), row(3, "b", "a"), row(4, "c")]
    boom = TimeoutError("x")
    # Events: 1a ok, 1b ok, 2a FAILS, 2c ok, 3b ok, 3a ok (but after 2a), 4c ok.
    settlement = settle(rows, [None, None, boom, None, None, None, None])
    assert [r.id for r in settlement.sent] == [1, 4]
    (r2, done2, again2, why2), (r3, done3, again3, why3) = settlement.unsent
    assert (r2.id, [e.partition_key for e in done2], [e.partition_key for e in again2], why2) == (
        2, ["c"], ["a"], [boom]
    )  # fmt: skip
    # 3a reached Kafka after 2a failed: it is published again after 2a (at-least-once, in order).
    assert (r3.id, [e.partition_key for e in done3], [e.partition_key for e in again3], why3) == (
        3, ["b"], ["a"], [None]
    )  # fmt: skip
    assert settlement.events_sent == 2 + 1 + 1 + 1


def test_outcomes_must_match_events() -> None:
    with pytest.raises(ValueError, match="1 outcomes for 2 events"):
        settle([row(1, "a", "b")], [None])


def free(row_id: int, *keys: str) -> ClaimCandidate:
    return ClaimCandidate(row_id, keys, True)


def held(row_id: int, *keys: str) -> ClaimCandidate:
    return ClaimCandidate(row_id, keys, False)


def test_free_rows_with_no_earlier_held_key_are_all_claimed() -> None:
    assert claimable([free(3, "a"), free(1, "a", "b"), free(2, "c")]) == [1, 2, 3]


def test_a_held_row_blocks_later_rows_of_its_keys_and_the_blocking_passes_on() -> None:
    rows = [held(1, "a"), free(2, "a", "b"), free(3, "b"), free(4, "c"), free(5, "b", "d"), free(6, "d", "e")]
    # 2 waits behind 1 (key a); 3 and 5 would overtake 2's event of key b, 6 would overtake 5's of d.
    assert claimable(rows) == [4]


def test_a_held_row_after_a_free_one_blocks_nothing_before_it() -> None:
    assert claimable([free(1, "a"), held(2, "a"), free(3, "b")]) == [1, 3]


def test_message_carries_key_value_and_headers() -> None:
    message = event("call-1", 7).message()
    assert message.key == b"call-1"
    assert message.value == b'{"a":1}'
    assert dict(message.headers) == {"event_type": b"call.ended", "event_id": b"e-call-1-7"}


def test_rewritten_events_keep_each_envelope_byte_for_byte() -> None:
    envelope = r'{"z": 1,  "a":"\u00e9"}'  # spacing and an escape as written: not parsed and printed again
    odd = OutboxEvent("e1", "t", "k", "call.ended", envelope)
    assert events_json([odd]) == '[["e1","t","k","call.ended",' + envelope + "]]"


def test_backoff_doubles_up_to_the_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(0.1, 1.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, so relays do not retry in lockstep
    backoff.reset()
    assert backoff.next_delay() <= 0.1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", 0, "batch_size must be >= 1"),
        ("claim_rows", 0, "claim_rows must be >= 1"),
        ("poll_interval_seconds", 0, "poll_interval_seconds must be > 0"),
        ("lease_seconds", -1, "lease_seconds must be > 0"),
    ],
)
def test_relay_config_refuses_nonsense(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RelayConfig(domain="calls", dsn="postgresql://x", **{field: value})  # type: ignore[arg-type]


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="0 < initial"):
        Backoff(0, 1)
