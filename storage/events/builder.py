"""Build event envelopes, and the outbox row fields that carry them to Kafka."""

from __future__ import annotations

import datetime as dt
import os
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
        "event_id": _new_event_id() if event_id is None else str(event_id),
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


# Bits uuid.UUID(version=4) overwrites: the version nibble (4) and the variant bits (RFC 4122).
_UUID4_FIXED_BITS = (0xF000 << 64) | (0xC000 << 48)
_UUID4_SET_BITS = (4 << 76) | (0x8000 << 48)


class _RandomPool:
    """Bytes from ``os.urandom`` read 4 KiB (256 event ids) at a time: a call writes ~13 events, and one
    ``getrandom`` system call per id showed in profiles. A forked child starts a pool of its own. (The SIP
    identifiers have the same in signaling/sip/message.py, which storage does not import.)"""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._pool, self._at = b"", 0

    def take16(self) -> bytes:
        at = self._at
        if at + 16 > len(self._pool):
            self._pool, at = os.urandom(4096), 0
        self._at = at + 16
        return self._pool[at : at + 16]


_random = _RandomPool()


def _new_event_id() -> str:
    """``str(uuid.uuid4())``, the same random version-4 UUID, without building the ``UUID`` object on the
    way (its constructor and ``__str__`` are most of what an event id cost)."""
    value = int.from_bytes(_random.take16()) & ~_UUID4_FIXED_BITS | _UUID4_SET_BITS
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


@dataclass(frozen=True)
class OutboxEntry:
    """The columns of one ``outbox`` row (besides the ones the database fills in)."""

    event_id: str  # the envelope's (PostgreSQL parses it into the uuid column)
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
