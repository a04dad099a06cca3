"""The event contract: one envelope for every event, a JSON Schema per type, topic and key routing."""

from storage.events.builder import OutboxEntry, assemble_event, format_timestamp, make_event, outbox_entry
from storage.events.catalogue import (
    CURRENT_SCHEMA_VERSION,
    DEFAULT_TOPICS,
    EventTopics,
    EventType,
    key_field,
)
from storage.events.validation import EventValidationError, parse_event, schema_path, validate_event

__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "DEFAULT_TOPICS",
    "EventTopics",
    "EventType",
    "EventValidationError",
    "OutboxEntry",
    "assemble_event",
    "format_timestamp",
    "key_field",
    "make_event",
    "outbox_entry",
    "parse_event",
    "schema_path",
    "validate_event",
]
