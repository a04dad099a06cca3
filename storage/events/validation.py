"""Validate an event envelope against the JSON Schema of its type (files in ``schemas/``)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

from storage.events.catalogue import EventType

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
ENVELOPE_SCHEMA_FILE = SCHEMA_DIR / "envelope.json"


class EventValidationError(ValueError):
    """An envelope that breaks the event contract; the message names the type, event and field."""


def schema_path(event_type: EventType | str) -> Path:
    return SCHEMA_DIR / f"{EventType(event_type).value}.json"


def validate_event(envelope: Any) -> None:
    """Raise :class:`EventValidationError` unless ``envelope`` is a valid event of a known type."""
    if not isinstance(envelope, Mapping):
        raise EventValidationError(f"event must be a JSON object, got {type(envelope).__name__}")
    raw_type = envelope.get("type")
    event_id = envelope.get("event_id", "?")
    try:
        event_type = EventType(str(raw_type))
    except ValueError:
        raise EventValidationError(f"event {event_id}: unknown event type {raw_type!r}") from None
    validator = _validator(event_type)
    errors = sorted(validator.iter_errors(envelope), key=lambda e: (len(e.absolute_path), list(e.path)))
    if errors:
        error = _most_specific(errors[0])
        where = "/".join(str(part) for part in error.absolute_path) or "(envelope)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise EventValidationError(f"event {event_type} {event_id}: {where}: {error.message}{more}")


def parse_event(raw: bytes | str) -> dict[str, Any]:
    """Decode JSON bytes and validate; any problem is an :class:`EventValidationError`."""
    try:
        envelope = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventValidationError(f"event is not valid JSON: {exc}") from None
    validate_event(envelope)
    return envelope  # type: ignore[no-any-return]


def _most_specific(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    # allOf/oneOf failures wrap the useful error in their context; report the deepest one.
    while error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return error


_format_checker = jsonschema.FormatChecker()


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    dt.datetime.fromisoformat(value)
    return True


_format_checker.checks("date-time", raises=ValueError)(_is_rfc3339)


@cache
def _registry() -> Registry[Any]:
    envelope = json.loads(ENVELOPE_SCHEMA_FILE.read_text(encoding="utf-8"))
    registry: Registry[Any] = Registry().with_resource(envelope["$id"], Resource.from_contents(envelope))
    return registry


@cache
def _validator(event_type: EventType) -> jsonschema.Draft202012Validator:
    schema = json.loads(schema_path(event_type).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=_registry(), format_checker=_format_checker)
