"""ObjectIndex + PresignedUrlLeaseStore contract: the fake, DB_CDR and DB_CONFERENCES behave alike."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import structlog

from storage.memory.sql_domains import MemoryObjectIndex, MemoryUrlLeaseStore
from storage.ports import (
    ConflictError,
    InvalidStateChange,
    NewLease,
    NewObject,
    NotFoundError,
    ObjectIndex,
    PresignedUrlLeaseStore,
    RetentionViolation,
)
from storage.postgres.objects import PgObjectIndex, PgUrlLeaseStore
from tests.contract.pg_fixtures import START, StepClock, open_pool, pg_database, pg_templates  # noqa: F401

DAY = dt.timedelta(days=1)
CHECKSUM = "ab" * 32


@pytest.fixture(params=["memory", "cdr", "conferences"])
async def objects(
    request: pytest.FixtureRequest,
    pg_database: Callable[[str], Awaitable[str]],  # noqa: F811
) -> AsyncIterator[tuple[ObjectIndex, PresignedUrlLeaseStore, StepClock]]:
    clock = StepClock()
    if request.param == "memory":
        index = MemoryObjectIndex(clock=clock)
        yield index, MemoryUrlLeaseStore(index, clock=clock), clock
        return
    pool = await open_pool(await pg_database(request.param))
    try:
        yield PgObjectIndex(pool, clock=clock), PgUrlLeaseStore(pool, clock=clock), clock
    finally:
        await pool.close()


def recording(**overrides: Any) -> NewObject:
    call_id = uuid.uuid4()
    fields: dict[str, Any] = {
        "bucket": "recordings",
        "storage_key": f"recordings/calls/{call_id}/{uuid.uuid4()}/audio.opus",
        "object_kind": "call_audio",
        "content_type": "audio/ogg",
        "access_policy_ref": "recordings.call_participants",
        "retention_until": START + 90 * DAY,
        "call_id": call_id,
        "correlation_id": uuid.uuid4(),
        "owner_account_id": uuid.uuid4(),
    }
    fields.update(overrides)
    return NewObject(**fields)


async def test_object_life_cycle_and_retention(
    objects: tuple[ObjectIndex, PresignedUrlLeaseStore, StepClock],
) -> None:
    index, _, clock = objects
    obj = await index.register(recording())
    assert obj.status == "pending" and obj.size_bytes is None
    with pytest.raises(ConflictError):
        await index.register(recording(storage_key=obj.storage_key))
    video = await index.register(recording(call_id=obj.call_id, object_kind="call_video", storage_key="v/1"))
    available = await index.mark_available(obj.object_id, size_bytes=123_456, checksum_sha256=CHECKSUM)
    assert (available.status, available.size_bytes, available.checksum_sha256) == (
        "available",
        123_456,
        CHECKSUM,
    )
    with pytest.raises(InvalidStateChange):
        await index.mark_available(obj.object_id, size_bytes=1)
    assert (await index.mark_failed(video.object_id)).status == "failed"
    assert await index.find("recordings", obj.storage_key) == available
    listed = await index.list_for_call(obj.call_id)  # type: ignore[arg-type]
    assert {o.object_id for o in listed} == {obj.object_id, video.object_id}
    assert await index.get(uuid.uuid4()) is None

    with pytest.raises(RetentionViolation, match="retained until"):
        await index.mark_deleted(obj.object_id)
    assert await index.list_expired(clock.now) == []
    later = START + 91 * DAY
    assert {o.object_id for o in await index.list_expired(later)} == {obj.object_id, video.object_id}
    assert len(await index.list_expired(later, limit=1)) == 1
    deleted = await index.mark_deleted(obj.object_id, at=later)
    assert deleted.status == "deleted" and deleted.deleted_at == later
    assert await index.mark_deleted(obj.object_id, at=later + DAY) == deleted
    assert [o.object_id for o in await index.list_expired(later)] == [video.object_id]

    mix_session = uuid.uuid4()
    mix = await index.register(
        recording(
            storage_key=f"recordings/conferences/{mix_session}/mix.opus",
            object_kind="conference_mix",
            call_id=None,
            conf_session_id=mix_session,
        )
    )
    assert await index.list_for_conf_session(mix_session) == [mix]


async def test_leases_record_who_why_until_when_and_revocation(
    objects: tuple[ObjectIndex, PresignedUrlLeaseStore, StepClock],
) -> None:
    index, leases, clock = objects
    obj = await index.register(recording())
    pending_lease = NewLease(
        obj.object_id, "account:alice", "playback", expires_at=START + dt.timedelta(minutes=5)
    )
    with pytest.raises(InvalidStateChange, match="pending"):
        await leases.issue(pending_lease)
    await index.mark_available(obj.object_id, size_bytes=10)
    with pytest.raises(NotFoundError):
        await leases.issue(NewLease(uuid.uuid4(), "a", "b", expires_at=START + DAY))
    with pytest.raises(ValueError, match="expire"):
        await leases.issue(NewLease(obj.object_id, "a", "b", expires_at=START))
    with pytest.raises(ValueError, match="expire"):
        await leases.issue(NewLease(obj.object_id, "a", "b", expires_at=START + 8 * DAY))

    url = "https://s3.example/recordings/x?X-Amz-Signature=abc"
    decision_id = uuid.uuid4()
    with structlog.testing.capture_logs() as logs:
        lease = await leases.issue(
            NewLease(
                obj.object_id,
                "account:alice",
                "playback",
                expires_at=START + dt.timedelta(minutes=5),
                decision_id=decision_id,
                url=url,
            )
        )
    assert lease.issued_at == START and lease.decision_id == decision_id and lease.url_sha256 != url
    assert lease.is_active(START + dt.timedelta(minutes=4))
    assert not lease.is_active(START + dt.timedelta(minutes=5))
    assert [entry["event"] for entry in logs] == ["presigned_url.issued"]
    assert logs[0]["issued_to"] == "account:alice" and logs[0]["lease_id"] == str(lease.lease_id)
    assert await leases.find_by_url(url) == lease
    assert await leases.find_by_url(url + "x") is None

    clock.advance(60)
    second = await leases.issue(
        NewLease(obj.object_id, "service:stt", "transcription", expires_at=clock.now + DAY)
    )
    with structlog.testing.capture_logs() as logs:
        revoked = await leases.revoke(lease.lease_id, revoked_by="admin:bob", reason="leaked")
    assert revoked.revoked_at == clock.now and revoked.revoke_reason == "leaked"
    assert not revoked.is_active(START)
    assert [entry["event"] for entry in logs] == ["presigned_url.revoked"]
    clock.advance(60)
    assert await leases.revoke(lease.lease_id, revoked_by="admin:eve") == revoked
    with pytest.raises(NotFoundError):
        await leases.revoke(uuid.uuid4(), revoked_by="admin:bob")
    assert await leases.list_for_object(obj.object_id) == [revoked, second]
    assert await leases.get(second.lease_id) == second


def test_new_object_and_lease_validation() -> None:
    with pytest.raises(ValueError, match="object_kind"):
        recording(object_kind="avatar")
    with pytest.raises(ValueError, match="time zone"):
        recording(retention_until=dt.datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="http_method"):
        NewLease(uuid.uuid4(), "a", "b", expires_at=START, http_method="DELETE")
