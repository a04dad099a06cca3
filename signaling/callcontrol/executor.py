"""Run one media or persistence action against the ports (shared by the asyncio service and the tests).

No asyncio here: these are plain coroutines over the ``MediaControl``, ``CallRepository`` and
``CdrRepository`` Protocols, so unit tests can drive them with in-memory fakes and no event loop.
"""

from __future__ import annotations

from typing import Any

from media.control import LocalMedia, MediaControl, QualitySnapshot
from signaling.callcontrol.actions import (
    Action,
    ConfigureEndpoint,
    ConnectEndpoints,
    CreateEndpoint,
    DestroyEndpoint,
    DisconnectEndpoints,
    EchoEndpoint,
    RecordAnswer,
    RecordCallStart,
    RecordCdr,
    RecordEnd,
    RecordLeg,
    RecordLegState,
    RecordQuality,
    RecordRouting,
    SendDtmf,
)
from storage.ports import CallWrites, CdrRepository


async def run_media(action: Action, media: MediaControl, call_id: str) -> LocalMedia | QualitySnapshot | None:
    """Execute a media action; ``CreateEndpoint`` returns the endpoint, ``DestroyEndpoint`` its quality."""
    if isinstance(action, CreateEndpoint):
        return await media.create_endpoint(call_id, str(action.leg_id))
    if isinstance(action, ConfigureEndpoint):
        await media.configure(action.endpoint_id, action.params)
    elif isinstance(action, ConnectEndpoints):
        await media.connect(action.a, action.b)
    elif isinstance(action, DisconnectEndpoints):
        await media.disconnect(action.a, action.b)
    elif isinstance(action, EchoEndpoint):
        await media.echo(action.endpoint_id)
    elif isinstance(action, SendDtmf):
        await media.send_dtmf(action.endpoint_id, action.digit, action.duration_ms)
    elif isinstance(action, DestroyEndpoint):
        return await media.destroy(action.endpoint_id)
    else:
        raise TypeError(f"not a media action: {action!r}")
    return None


async def run_persist(action: Action, calls: CallWrites, cdrs: CdrRepository) -> Any:
    """Execute one repository write (each emits its event through the repository's outbox)."""
    if isinstance(action, RecordCallStart):
        return await calls.start_call(action.call)
    if isinstance(action, RecordLeg):
        return await calls.add_leg(action.call_id, action.leg)
    if isinstance(action, RecordLegState):
        return await calls.change_leg_state(action.leg_id, action.state, reason=action.reason, at=action.at)
    if isinstance(action, RecordRouting):
        return await calls.record_routing_attempt(
            action.call_id,
            step=action.step,
            target=action.target,
            result=action.result,
            sip_status=action.sip_status,
            leg_id=action.leg_id,
            at=action.at,
        )
    if isinstance(action, RecordAnswer):
        return await calls.answer_call(action.call_id, leg_id=action.leg_id, at=action.at)
    if isinstance(action, RecordEnd):
        return await calls.end_call(
            action.call_id,
            termination_cause=action.termination_cause,
            sip_status=action.sip_status,
            ended_by=action.ended_by,
            at=action.at,
        )
    if isinstance(action, RecordCdr):
        return await cdrs.record_cdr(action.cdr)
    if isinstance(action, RecordQuality):
        return await calls.report_quality(action.call_id, action.report)
    raise TypeError(f"not a persistence action: {action!r}")
