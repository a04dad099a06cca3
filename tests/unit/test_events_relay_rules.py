"""Pure rules of the outbox relay: what may be marked sent after a partial failure, how retries back off."""

from __future__ import annotations

import random

import pytest

from storage.kafka.backoff import Backoff
from storage.kafka.relay import ClaimedRow, RelayConfig, acknowledged_prefix


def row(row_id: int, key: str) -> ClaimedRow:
    return ClaimedRow(
        id=row_id,
        event_id=f"e{row_id}",
        topic="call-events",
        partition_key=key,
        event_type="call.ended",
        envelope='{"a": 1}',
    )


def test_all_acknowledged_rows_are_marked() -> None:
    rows = [row(1, "a"), row(2, "b"), row(3, "a")]
    assert acknowledged_prefix(rows, [None, None, None]) == [1, 2, 3]


def test_after_a_failure_later_rows_of_that_key_stay_unsent_even_if_acknowledged() -> None:
    rows = [row(1, "a"), row(2, "a"), row(3, "b"), row(4, "a"), row(5, "b")]
    outcomes: list[BaseException | None] = [None, TimeoutError("x"), None, None, None]
    # Row 4 reached Kafka but after row 2 failed: it is published again after row 2 (at-least-once).
    assert acknowledged_prefix(rows, outcomes) == [1, 3, 5]


def test_outcomes_must_match_rows() -> None:
    with pytest.raises(ValueError):
        acknowledged_prefix([row(1, "a")], [])


def test_message_carries_key_value_and_headers() -> None:
    message = row(7, "call-1").message()
    assert message.key == b"call-1"
    assert message.value == b'{"a": 1}'
    assert dict(message.headers) == {"event_type": b"call.ended", "event_id": b"e7"}


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
