"""The per-event shortcuts of the builder, router and outbox writer produce what the long ways did."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from storage.events import (
    DEFAULT_TOPICS,
    EventTopics,
    EventType,
    format_timestamp,
    key_field,
    make_event,
    outbox_entry,
)
from storage.events.catalogue import as_event_type, route_of
from storage.events.examples import example_payload
from storage.events.validation import EventValidationError
from storage.kafka.outbox_writer import events_json
from storage.postgres.domain_events import RecentTexts

KEY = "3f2c1b0a-9d8e-4f7a-8b6c-5d4e3f2a1b0c"


def test_a_given_event_id_is_kept() -> None:
    event_id = uuid.uuid4()
    event = make_event(
        EventType.CALL_ANSWERED,
        payload=example_payload(EventType.CALL_ANSWERED),
        correlation_id=KEY,
        node_id="n",
        call_id=KEY,
        event_id=event_id,
    )
    assert event["event_id"] == str(event_id)


@pytest.mark.parametrize("event_type", list(EventType))
def test_routes_say_what_the_enum_and_the_topic_rules_say(event_type: EventType) -> None:
    route = route_of(event_type)
    assert route is route_of(event_type.value)
    assert route.event_type is as_event_type(event_type.value)
    assert type(route.value) is str and route.value == event_type.value
    family = event_type.value.split(".", 1)[0]
    assert (
        route.key_field
        == ("conf_session_id" if family == "conference" else "call_id")
        == key_field(event_type)
    )
    topics = EventTopics(call="c", cdr="d", conf="f")
    assert topics.for_type(event_type) == {"call": "c", "cdr": "d", "conference": "f"}[family]


@pytest.mark.parametrize("value", ["call.nope", "", "CALL_STARTED"])
def test_an_unknown_type_is_refused_by_route_of_as_by_the_enum(value: str) -> None:
    with pytest.raises(ValueError, match="is not a valid EventType"):
        route_of(value)


@pytest.mark.parametrize("event_type", list(EventType))
def test_outbox_rows_carry_plain_strings_and_the_same_json(event_type: EventType) -> None:
    keyed_by_call = key_field(event_type) == "call_id"
    payload = dict(example_payload(event_type))
    accented = "na\u00efve \u2013 \u00fcn\u00efcode"  # not ASCII: written as UTF-8, unescaped
    payload |= {key: accented for key in ("from_uri", "caller", "content_type") if key in payload}
    event = make_event(
        event_type,
        payload=payload,
        correlation_id=KEY,
        node_id="n",
        occurred_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        call_id=KEY if keyed_by_call else None,
        conf_session_id=None if keyed_by_call else KEY,
    )
    entry = outbox_entry(event, DEFAULT_TOPICS, validated=True)
    assert type(entry.event_type) is str and type(event["type"]) is str
    row = [entry.event_id, entry.topic, entry.partition_key, entry.event_type, entry.envelope]
    assert events_json([entry, entry]) == json.dumps([row, row], separators=(",", ":"), ensure_ascii=False)


def test_recent_texts_render_each_object_once_while_it_is_recent_and_never_confuse_equal_ones() -> None:
    rendered: list[object] = []

    def render(value: uuid.UUID) -> str:
        rendered.append(value)
        return str(value)

    texts = RecentTexts[uuid.UUID](render, size=2)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    asked = [first, first, second, first]
    assert [texts(value) for value in asked] == [str(value) for value in asked]
    assert rendered == [first, second]
    twin = uuid.UUID(str(first))  # equal, not the same object: rendered on its own
    assert texts(twin) == str(first) and rendered[-1] is twin
    texts(third)  # the cache holds two: twin and third now
    assert texts(second) == str(second) and rendered[-1] is second


def test_format_timestamp_still_refuses_a_naive_datetime_however_often_it_is_asked() -> None:
    naive = dt.datetime(2025, 1, 1, 12, 0)
    for _ in range(2):
        with pytest.raises(EventValidationError, match="no time zone"):
            format_timestamp(naive)
    aware = dt.datetime(2025, 1, 1, 12, 0, 0, 250, tzinfo=dt.UTC)
    assert format_timestamp(aware) == format_timestamp(aware) == "2025-01-01T12:00:00.000250Z"
    other_zone = dt.datetime(2025, 1, 1, 13, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert format_timestamp(other_zone) == "2025-01-01T12:00:00Z"
