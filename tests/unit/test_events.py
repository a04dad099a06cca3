"""The event contract: every type has a schema, the builder's output validates, bad envelopes are refused."""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from typing import Any

import fastjsonschema
import jsonschema
import pytest

from storage.events import (
    DEFAULT_TOPICS,
    EventTopics,
    EventType,
    EventValidationError,
    format_timestamp,
    key_field,
    make_event,
    outbox_entry,
    parse_event,
    schema_path,
    validate_event,
)
from storage.events.examples import example_payload
from storage.events.validation import SCHEMA_DIR, _validators

T0 = dt.datetime(2025, 3, 1, 9, 30, 15, 250000, tzinfo=dt.UTC)
KEY = "3f2c1b0a-9d8e-4f7a-8b6c-5d4e3f2a1b0c"
CORRELATION = "0a1b2c3d-4e5f-4a6b-9c7d-8e9f0a1b2c3d"


def build(event_type: EventType, **overrides: Any) -> dict[str, Any]:
    ids = {key_field(event_type): KEY}
    args: dict[str, Any] = {
        "payload": example_payload(event_type),
        "correlation_id": CORRELATION,
        "node_id": "edge-a",
        "occurred_at": T0,
        **ids,
    }
    args.update(overrides)
    return make_event(event_type, **args)


@pytest.mark.parametrize("event_type", list(EventType))
def test_every_event_type_has_a_valid_draft_2020_12_schema(event_type: EventType) -> None:
    schema = json.loads(schema_path(event_type).read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["type"] == {"const": event_type.value}
    jsonschema.Draft202012Validator.check_schema(schema)


def test_no_schema_file_without_an_event_type() -> None:
    names = {p.name.removesuffix(".json") for p in SCHEMA_DIR.glob("*.json")} - {"envelope"}
    assert names == {t.value for t in EventType}


@pytest.mark.parametrize("event_type", list(EventType))
def test_builder_output_validates_and_round_trips_through_json(event_type: EventType) -> None:
    event = build(event_type)
    assert event["type"] == event_type.value
    assert event["schema_version"] == 1
    assert event["occurred_at"] == "2025-03-01T09:30:15.250000Z"
    assert uuid.UUID(event["event_id"]).version == 4
    assert parse_event(json.dumps(event).encode()) == event


@pytest.mark.parametrize(
    ("event_type", "topic", "key"),
    [
        (EventType.CALL_STARTED, "call-events", "call_id"),
        (EventType.CALL_QUALITY_REPORTED, "call-events", "call_id"),
        (EventType.CDR_CREATED, "cdr-events", "call_id"),
        (EventType.CONFERENCE_PARTICIPANT_JOINED, "conf-events", "conf_session_id"),
    ],
)
def test_outbox_entry_routes_by_type(event_type: EventType, topic: str, key: str) -> None:
    event = build(event_type)
    entry = outbox_entry(event)
    assert entry.topic == topic
    assert entry.partition_key == event[key] == KEY
    assert str(entry.event_id) == event["event_id"]
    assert outbox_entry(event, DEFAULT_TOPICS.with_prefix("t1-")).topic == "t1-" + topic


def test_topics_can_be_renamed() -> None:
    topics = EventTopics(call="a", cdr="b", conf="c")
    types = ("call.ended", "cdr.created", "conference.session.ended")
    assert [topics.for_type(t) for t in types] == ["a", "b", "c"]


def test_timestamps_are_utc_with_z() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert format_timestamp(dt.datetime(2025, 1, 1, 14, 0, tzinfo=plus_two)) == "2025-01-01T12:00:00Z"
    with pytest.raises(EventValidationError, match="no time zone"):
        format_timestamp(dt.datetime(2025, 1, 1))


def mutate(event: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    bad = copy.deepcopy(event)
    target = bad
    for part in path[:-1]:
        target = target[part]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return bad


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["event_id"], "not-a-uuid", r"event_id: 'not-a-uuid' does not match"),
        (["occurred_at"], "2025-03-01T09:30:15+02:00", r"occurred_at: .* does not match"),
        (["occurred_at"], "2025-13-45T09:30:15Z", r"occurred_at: .* is not a 'date-time'"),
        (["schema_version"], 2, r"schema_version: 1 was expected"),
        (["call_id"], KeyError, r"\(envelope\): 'call_id' is a required property"),
        (["call_id"], "sip-call-id@host", r"call_id: 'sip-call-id@host' does not match"),
        (["correlation_id"], "ABC", r"correlation_id: 'ABC' does not match"),
        (["payload", "account_id"], "acc-7", r"payload/account_id: 'acc-7' does not match"),
        (["node_id"], "", r"node_id: '' should be non-empty"),
        (["payload", "duration_seconds"], -1, r"payload/duration_seconds: -1 is less than the minimum of 0"),
        (["payload", "cost"], 0.12, r"payload/cost: 0.12 is not"),
        (["payload", "currency"], None, r"payload/currency: None is not"),
        (["payload", "surprise"], 1, r"payload: Additional properties are not allowed \('surprise'"),
        (["extra"], 1, r"Additional properties are not allowed \('extra'"),
    ],
)
def test_bad_cdr_envelopes_are_rejected_naming_the_field(path: list[str], value: Any, message: str) -> None:
    bad = mutate(build(EventType.CDR_CREATED), path, value)
    with pytest.raises(EventValidationError, match=message) as info:
        validate_event(bad)
    assert str(info.value).startswith("event cdr.created ")


def test_uncharged_cdr_may_omit_currency_and_account() -> None:
    payload = example_payload(EventType.CDR_CREATED) | {"cost": None, "currency": None, "account_id": None}
    validate_event(build(EventType.CDR_CREATED, payload=payload))


def test_conference_event_needs_conf_session_id() -> None:
    event = build(EventType.CONFERENCE_SESSION_STARTED)
    del event["conf_session_id"]
    event["call_id"] = KEY
    with pytest.raises(EventValidationError, match="'conf_session_id' is a required property"):
        validate_event(event)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff\xfe", "not valid JSON"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'{"type": "call.exploded", "event_id": "e1"}', "event e1: unknown event type 'call.exploded'"),
    ],
)
def test_garbage_is_rejected_with_a_clear_message(raw: bytes, message: str) -> None:
    with pytest.raises(EventValidationError, match=message):
        parse_event(raw)


def test_builder_refuses_unknown_type_and_bad_payload() -> None:
    with pytest.raises(EventValidationError, match=r"unknown event type 'call\.teleported'"):
        make_event("call.teleported", payload={}, correlation_id=CORRELATION, node_id="n", call_id=KEY)
    with pytest.raises(EventValidationError, match="payload: 'leg_id' is a required property"):
        make_event(
            EventType.CALL_LEG_CREATED, payload={}, correlation_id=CORRELATION, node_id="n", call_id=KEY
        )


WRONG_VALUES: list[Any] = [None, {}, [], "", "x" * 3000, -1, 1.5, True, "2025-13-01T00:00:00Z", KEY]


@pytest.mark.parametrize("event_type", list(EventType))
def test_compiled_checker_agrees_with_the_reference_validator(event_type: EventType) -> None:
    """The hot-path checker (fastjsonschema) must accept and refuse exactly what jsonschema does."""
    fast_check, reference = _validators(event_type)
    event = build(event_type)
    candidates = [event]
    for field in [*event["payload"], "__new__"]:
        for value in WRONG_VALUES:
            candidates.append(mutate(event, ["payload", field], value))
    for field in ("event_id", "occurred_at", "node_id", "schema_version", key_field(event_type)):
        for value in WRONG_VALUES:
            candidates.append(mutate(event, [field], value))
    for candidate in candidates:
        try:
            fast_check(candidate)
            fast_ok = True
        except fastjsonschema.JsonSchemaException:
            fast_ok = False
        assert fast_ok == reference.is_valid(candidate), candidate


@pytest.mark.parametrize("event_type", list(EventType))
def test_as_event_type_matches_the_enum_for_members_and_values(event_type: EventType) -> None:
    from storage.events.catalogue import as_event_type

    assert as_event_type(event_type) is event_type
    assert as_event_type(event_type.value) is EventType(event_type.value)


@pytest.mark.parametrize("value", ["call.nope", "", "CALL_STARTED", "Call.Started"])
def test_as_event_type_raises_like_the_enum_for_unknown_values(value: str) -> None:
    from storage.events.catalogue import as_event_type

    with pytest.raises(ValueError, match="is not a valid EventType"):
        as_event_type(value)
    with pytest.raises(EventValidationError, match="unknown event type"):
        make_event(value, payload={}, correlation_id="c", node_id="n", call_id="x")
