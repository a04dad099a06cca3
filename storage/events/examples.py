"""One valid example payload per event type: for tests, benchmarks and documentation."""

from __future__ import annotations

from typing import Any

from storage.events.catalogue import EventType

# Fixed identifiers, so examples are stable (every domain identifier is a UUID).
ALICE = "5b0e2d4c-1f6a-4c1e-9a57-0d5e3f7a9b11"
LEG_A = "7c9d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f"
LEG_B = "8d0e2f3a-4b5c-4d6e-9f70-8b9c0d1e2f3a"
DEVICE = "9e1f3a4b-5c6d-4e7f-a081-9c0d1e2f3a4b"
CDR = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
PLAN = "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e"
CONFERENCE = "c3d4e5f6-a7b8-4c9d-ae0f-2a3b4c5d6e7f"
CONF_SESSION = "d4e5f6a7-b8c9-4d0e-bf1a-3b4c5d6e7f80"
PARTICIPANT = "e5f6a7b8-c9d0-4e1f-8a2b-4c5d6e7f8091"
CALL = "f6a7b8c9-d0e1-4f2a-9b3c-5d6e7f8091a2"
RECORDING = "0718293a-4b5c-4d6e-8f70-6e7f8091a2b3"

_EXAMPLES: dict[EventType, dict[str, Any]] = {
    EventType.CALL_STARTED: {
        "direction": "inbound",
        "media": "audio",
        "from_uri": "sip:alice@example.com",
        "to_uri": "sip:bob@example.com",
        "initiator_account_id": ALICE,
        "callee_account_id": None,
    },
    EventType.CALL_ANSWERED: {"answered_leg_id": LEG_B, "setup_ms": 1840},
    EventType.CALL_ENDED: {
        "termination_cause": "normal_clearing",
        "sip_status": 200,
        "duration_ms": 65_000,
        "talk_ms": 63_160,
        "ended_by": "caller",
    },
    EventType.CALL_LEG_CREATED: {
        "leg_id": LEG_A,
        "leg_type": "webrtc",
        "direction": "inbound",
        "remote_address": "198.51.100.7:49170",
        "device_id": DEVICE,
    },
    EventType.CALL_LEG_STATE_CHANGED: {
        "leg_id": LEG_A,
        "from_state": "early",
        "to_state": "confirmed",
        "reason": None,
    },
    EventType.CALL_ROUTING_ATTEMPTED: {
        "step": 1,
        "target": "sip:bob@10.0.0.5:5060",
        "result": "no_answer",
        "sip_status": 480,
    },
    EventType.CALL_QUALITY_REPORTED: {
        "leg_id": LEG_A,
        "interval_s": 5.0,
        "rtt_ms": 42.5,
        "jitter_ms": 3.1,
        "packet_loss_fraction": 0.004,
        "packets_lost": 1,
        "mos": 4.3,
    },
    EventType.CDR_CREATED: {
        "cdr_id": CDR,
        "account_id": ALICE,
        "caller": "+15550100",
        "callee": "+15550199",
        "started_at": "2025-01-01T12:00:00Z",
        "answered_at": "2025-01-01T12:00:02Z",
        "ended_at": "2025-01-01T12:01:05Z",
        "duration_seconds": 65,
        "billable_seconds": 63,
        "termination_cause": "normal_clearing",
        "cost": "0.1200",
        "currency": "EUR",
        "plan_id": PLAN,
    },
    EventType.CONFERENCE_SESSION_STARTED: {"conference_id": CONFERENCE, "access_model": "invite_only"},
    EventType.CONFERENCE_SESSION_ENDED: {
        "conference_id": CONFERENCE,
        "duration_ms": 1_800_000,
        "participant_count": 4,
        "reason": None,
    },
    EventType.CONFERENCE_PARTICIPANT_JOINED: {
        "conference_id": CONFERENCE,
        "participant_id": PARTICIPANT,
        "account_id": None,
        "external_ref": "guest:7f3a",
        "call_id": CALL,
        "role": "speaker",
    },
    EventType.CONFERENCE_PARTICIPANT_LEFT: {
        "conference_id": CONFERENCE,
        "participant_id": PARTICIPANT,
        "duration_ms": 600_000,
        "reason": "hangup",
    },
    EventType.CONFERENCE_RECORDING_COMPLETED: {
        "conference_id": CONFERENCE,
        "recording_id": RECORDING,
        "storage_key": f"recordings/conferences/{CONF_SESSION}/mix.opus",
        "duration_ms": 1_800_000,
        "size_bytes": 14_400_000,
        "content_type": "audio/ogg; codecs=opus",
    },
}


def example_payload(event_type: EventType | str) -> dict[str, Any]:
    """A fresh copy (callers may change it)."""
    import copy

    return copy.deepcopy(_EXAMPLES[EventType(event_type)])
