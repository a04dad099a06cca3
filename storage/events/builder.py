"""Build event envelopes, and the outbox row fields that carry them to Kafka."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storage.events.catalogue import (
    CURRENT_SCHEMA_VERSION,
    DEFAULT_TOPICS,
    EventTopics,
    EventType,
    route_of,
)
from storage.events.validation import EventValidationError, validate_built_event, validate_event
from storage.ids import random_uuid4_text


def format_timestamp(moment: dt.datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix (microseconds kept when present)."""
    if moment.tzinfo is None:
        raise EventValidationError(f"timestamp {moment!r} has no time zone; pass an aware datetime")
    if moment.tzinfo is not dt.UTC:  # PostgreSQL and our clocks hand out UTC already
        moment = moment.astimezone(dt.UTC)
    return moment.isoformat().removesuffix("+00:00") + "Z"


def make_event(
    event_type: EventType | str,
    *,
    payload: Mapping[str, Any],
    correlation_id: str,
    node_id: str,
    call_id: str | None = None,
    conf_session_id: str | None = None,
    occurred_at: dt.datetime | None = None,
    event_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """A validated envelope; raises :class:`EventValidationError` naming the field that is wrong."""
    try:
        route = route_of(event_type)
    except ValueError:
        raise EventValidationError(f"unknown event type {event_type!r}") from None
    envelope = assemble_event(
        route.event_type,
        payload=payload,
        correlation_id=correlation_id,
        node_id=node_id,
        call_id=call_id,
        conf_session_id=conf_session_id,
        occurred_at=occurred_at,
        event_id=event_id,
    )
    validate_built_event(route.event_type, envelope)
    return envelope


def assemble_event(
    event_type: EventType,
    *,
    payload: Mapping[str, Any],
    correlation_id: str,
    node_id: str,
    call_id: str | None = None,
    conf_session_id: str | None = None,
    occurred_at: dt.datetime | None = None,
    event_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """The envelope :func:`make_event` builds, without the schema check.

    Only for producers whose every input was checked where it entered the domain, against the same limits
    as the schema, and whose output the tests validate across those inputs: the call repository's events
    (``storage.postgres.domain_events.call_event``; ``tests/unit/test_call_events_by_construction.py``).
    The check costs more than building the envelope, and a B2BUA call emits a dozen such events.
    """
    route = route_of(event_type)
    envelope: dict[str, Any] = {
        "event_id": random_uuid4_text() if event_id is None else str(event_id),
        "type": route.value,
        "schema_version": CURRENT_SCHEMA_VERSION[route.event_type],
        "occurred_at": format_timestamp(occurred_at or dt.datetime.now(dt.UTC)),
        "correlation_id": correlation_id,
        "node_id": node_id,
        "payload": dict(payload),
    }
    if call_id is not None:
        envelope["call_id"] = call_id
    if conf_session_id is not None:
        envelope["conf_session_id"] = conf_session_id
    return envelope


@dataclass(frozen=True)
class OutboxEntry:
    """One event of an ``outbox`` row (its ``events`` hold one such entry per event, in order)."""

    event_id: str  # the envelope's
    topic: str
    partition_key: str
    event_type: str
    envelope: dict[str, Any]


def outbox_entry(
    envelope: Mapping[str, Any], topics: EventTopics = DEFAULT_TOPICS, *, validated: bool = False
) -> OutboxEntry:
    """Route a valid envelope: its topic by type, its partition key by ``call_id``/``conf_session_id``.

    ``validated=True``: the caller has the envelope straight from :func:`make_event` (which validated
    it) and changed nothing since, so it is not validated a second time (the B2BUA writes ~13 events a
    call).
    """
    if not validated:
        validate_event(envelope)
    route = route_of(envelope["type"])
    return OutboxEntry(
        event_id=envelope["event_id"],
        topic=topics.of_route(route),
        partition_key=envelope[route.key_field],
        event_type=route.value,
        envelope=dict(envelope),
    )
