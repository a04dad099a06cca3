"""Which event types exist, which topic each goes to and which identifier keys its partition.

Events of one call (or one conference session) share a partition key so Kafka keeps them in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EventType(StrEnum):
    CALL_STARTED = "call.started"
    CALL_ANSWERED = "call.answered"
    CALL_ENDED = "call.ended"
    CALL_LEG_CREATED = "call.leg.created"
    CALL_LEG_STATE_CHANGED = "call.leg.state_changed"
    CALL_ROUTING_ATTEMPTED = "call.routing.attempted"
    CALL_QUALITY_REPORTED = "call.quality.reported"
    CDR_CREATED = "cdr.created"
    CONFERENCE_SESSION_STARTED = "conference.session.started"
    CONFERENCE_SESSION_ENDED = "conference.session.ended"
    CONFERENCE_PARTICIPANT_JOINED = "conference.participant.joined"
    CONFERENCE_PARTICIPANT_LEFT = "conference.participant.left"
    CONFERENCE_RECORDING_COMPLETED = "conference.recording.completed"


# The schema version a producer writes today, per type (a reader may accept older ones).
CURRENT_SCHEMA_VERSION: dict[EventType, int] = {event_type: 1 for event_type in EventType}


@dataclass(frozen=True)
class EventTopics:
    """Kafka topic names per event family; tests and deployments can rename them (e.g. a prefix)."""

    call: str = "call-events"
    cdr: str = "cdr-events"
    conf: str = "conf-events"

    def with_prefix(self, prefix: str) -> EventTopics:
        return EventTopics(call=prefix + self.call, cdr=prefix + self.cdr, conf=prefix + self.conf)

    def for_type(self, event_type: EventType | str) -> str:
        return self.of_route(route_of(event_type))

    def of_route(self, route: Route) -> str:
        """The topic of events routed by ``route`` (what :func:`route_of` says of their type)."""
        family = route.family
        if family == "call":
            return self.call
        return self.cdr if family == "cdr" else self.conf

    def all(self) -> tuple[str, str, str]:
        return (self.call, self.cdr, self.conf)


DEFAULT_TOPICS = EventTopics()


def key_field(event_type: EventType | str) -> str:
    """The envelope field whose value is the partition key: ``call_id`` or ``conf_session_id``."""
    return route_of(event_type).key_field


@dataclass(frozen=True, slots=True)
class Route:
    """What routing an event of one type needs, worked out once per type (not per event)."""

    event_type: EventType
    value: str  # the type as a plain ``str`` (reading ``.value`` of an enum member is a property call)
    family: str  # call, cdr or conference
    key_field: str


def route_of(value: EventType | str) -> Route:
    """The :class:`Route` of a type given as a member or as its value; an unknown type raises as
    ``EventType(value)`` does."""
    try:
        route = _ROUTES.get(value)
    except TypeError:  # unhashable: let the enum raise its usual error
        route = None
    return route if route is not None else _ROUTES[EventType(value)]


def as_event_type(value: EventType | str) -> EventType:
    """``EventType(value)`` without the enum machinery for a known value (~13 lookups per event).

    A member or a string equal to a member's value is found in a plain dict (a ``StrEnum`` member hashes
    and compares as its value); anything else goes to ``EventType(value)``, so an unknown value raises
    the same ``ValueError`` as before.
    """
    try:
        kind = _BY_VALUE.get(value)
    except TypeError:  # unhashable: let the enum raise its usual error
        kind = None
    return kind if kind is not None else EventType(value)


def _family(event_type: EventType) -> str:
    return event_type.value.split(".", 1)[0]


_FAMILIES = {event_type: _family(event_type) for event_type in EventType}
_BY_VALUE: dict[str, EventType] = {event_type.value: event_type for event_type in EventType}
# Keyed by value; a member finds its entry too (a StrEnum member hashes and compares as its value).
_ROUTES: dict[str, Route] = {
    event_type.value: Route(
        event_type=event_type,
        value=event_type.value,
        family=_FAMILIES[event_type],
        key_field="conf_session_id" if _FAMILIES[event_type] == "conference" else "call_id",
    )
    for event_type in EventType
}
