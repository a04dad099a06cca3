"""outbox_entry routes what make_event built without validating it twice, and still checks anything else."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from storage.events import DEFAULT_TOPICS, EventValidationError, format_timestamp, make_event, outbox_entry


def an_event(event_type: str = "call.leg.state_changed") -> dict[str, object]:
    return make_event(
        event_type,
        payload={"leg_id": str(uuid.uuid4()), "from_state": "initiated", "to_state": "early", "reason": None},
        correlation_id=str(uuid.uuid4()),
        node_id="edge-1",
        call_id=str(uuid.uuid4()),
        occurred_at=dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC),
    )


def test_a_validated_envelope_is_routed_like_any_other() -> None:
    envelope = an_event()
    assert outbox_entry(envelope, validated=True) == outbox_entry(envelope)
    entry = outbox_entry(envelope, DEFAULT_TOPICS.with_prefix("t-"), validated=True)
    assert (entry.topic, entry.partition_key, entry.event_type) == (
        "t-call-events",
        envelope["call_id"],
        "call.leg.state_changed",
    )
    assert str(entry.event_id) == envelope["event_id"]


def test_an_envelope_not_vouched_for_is_still_validated() -> None:
    broken = {**an_event(), "payload": {"leg_id": "not-a-uuid"}}
    with pytest.raises(EventValidationError, match=r"call\.leg\.state_changed"):
        outbox_entry(broken)


def test_timestamps_in_utc_or_another_zone_read_the_same() -> None:
    moment = dt.datetime(2025, 3, 1, 12, 0, 0, 250000, tzinfo=dt.UTC)
    assert format_timestamp(moment) == "2025-03-01T12:00:00.250000Z"
    paris = moment.astimezone(dt.timezone(dt.timedelta(hours=1)))
    assert format_timestamp(paris) == "2025-03-01T12:00:00.250000Z"
    with pytest.raises(EventValidationError, match="no time zone"):
        format_timestamp(moment.replace(tzinfo=None))
