"""Object index and pre-signed URL leases on DB_CDR (call recordings) or DB_CONFERENCES (mixes)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

import asyncpg

from storage.ports import ConflictError, IndexedObject, NewLease, NewObject, NotFoundError, UrlLease
from storage.postgres import object_rules
from storage.postgres.connect import transaction
from storage.postgres.policy_audit import check_limit
from storage.postgres.sql import queries_for

_SQL = queries_for("objects")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PgObjectIndex:
    """``ObjectIndex`` on an asyncpg pool of a domain database that owns objects."""

    def __init__(self, pool: asyncpg.Pool, *, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._pool = pool
        self._clock = clock

    async def register(self, obj: NewObject) -> IndexedObject:
        try:
            row = await self._pool.fetchrow(
                _SQL["insert_object"],
                obj.bucket,
                obj.storage_key,
                obj.object_kind,
                obj.content_type,
                obj.access_policy_ref,
                obj.retention_until,
                obj.owner_account_id,
                obj.call_id,
                obj.conf_session_id,
                obj.correlation_id,
            )
        except asyncpg.UniqueViolationError:
            raise ConflictError(f"{obj.bucket}/{obj.storage_key} is indexed already") from None
        return IndexedObject(**row)

    async def _change(
        self,
        object_id: uuid.UUID,
        status: str,
        check: Callable[[IndexedObject], None],
        *,
        size_bytes: int | None = None,
        checksum_sha256: str | None = None,
        deleted_at: dt.datetime | None = None,
    ) -> IndexedObject:
        async with transaction(self._pool, "updating the object index") as conn:
            row = await conn.fetchrow(_SQL["lock_object"], object_id)
            if row is None:
                raise NotFoundError(f"no indexed object {object_id}")
            current = IndexedObject(**row)
            if current.status == status == "deleted":
                return current
            check(current)
            changed = await conn.fetchrow(
                _SQL["set_status"], object_id, status, size_bytes, checksum_sha256, deleted_at
            )
        return IndexedObject(**changed)

    async def mark_available(
        self, object_id: uuid.UUID, *, size_bytes: int, checksum_sha256: str | None = None
    ) -> IndexedObject:
        object_rules.check_available(size_bytes, checksum_sha256)
        return await self._change(
            object_id,
            "available",
            object_rules.check_pending,
            size_bytes=size_bytes,
            checksum_sha256=checksum_sha256,
        )

    async def mark_failed(self, object_id: uuid.UUID) -> IndexedObject:
        return await self._change(object_id, "failed", object_rules.check_pending)

    async def mark_deleted(self, object_id: uuid.UUID, *, at: dt.datetime | None = None) -> IndexedObject:
        when = at or self._clock()
        return await self._change(
            object_id, "deleted", lambda obj: object_rules.check_deletable(obj, when), deleted_at=when
        )

    async def get(self, object_id: uuid.UUID) -> IndexedObject | None:
        row = await self._pool.fetchrow(_SQL["get_object"], object_id)
        return None if row is None else IndexedObject(**row)

    async def find(self, bucket: str, storage_key: str) -> IndexedObject | None:
        row = await self._pool.fetchrow(_SQL["find_object"], bucket, storage_key)
        return None if row is None else IndexedObject(**row)

    async def list_for_call(self, call_id: uuid.UUID) -> list[IndexedObject]:
        return [IndexedObject(**row) for row in await self._pool.fetch(_SQL["list_for_call"], call_id)]

    async def list_for_conf_session(self, conf_session_id: uuid.UUID) -> list[IndexedObject]:
        return [
            IndexedObject(**r) for r in await self._pool.fetch(_SQL["list_for_conf_session"], conf_session_id)
        ]

    async def list_expired(self, now: dt.datetime, *, limit: int = 1000) -> list[IndexedObject]:
        check_limit(limit)
        return [IndexedObject(**row) for row in await self._pool.fetch(_SQL["list_expired"], now, limit)]


class PgUrlLeaseStore:
    """``PresignedUrlLeaseStore`` on the same database as the object index it leases from."""

    def __init__(self, pool: asyncpg.Pool, *, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._pool = pool
        self._clock = clock

    async def issue(self, lease: NewLease) -> UrlLease:
        issued_at = lease.issued_at or self._clock()
        async with transaction(self._pool, "issuing a URL lease") as conn:
            row = await conn.fetchrow(_SQL["share_object"], lease.object_id)
            obj = None if row is None else IndexedObject(**row)
            object_rules.check_lease(lease, obj, issued_at)
            assert obj is not None
            issued = UrlLease(
                **await conn.fetchrow(
                    _SQL["insert_lease"],
                    lease.object_id,
                    lease.issued_to,
                    lease.issued_to_account_id,
                    lease.purpose,
                    lease.decision_id,
                    lease.http_method,
                    object_rules.url_digest(lease.url) if lease.url else None,
                    lease.correlation_id,
                    issued_at,
                    lease.expires_at,
                )
            )
        object_rules.log_issued(issued, obj)
        return issued

    async def revoke(
        self,
        lease_id: uuid.UUID,
        *,
        revoked_by: str,
        reason: str | None = None,
        at: dt.datetime | None = None,
    ) -> UrlLease:
        object_rules.check_revocation(revoked_by, reason)
        row = await self._pool.fetchrow(
            _SQL["revoke_lease"], lease_id, at or self._clock(), revoked_by, reason
        )
        if row is None:
            existing = await self.get(lease_id)
            if existing is None:
                raise NotFoundError(f"no URL lease {lease_id}")
            return existing
        revoked = UrlLease(**row)
        object_rules.log_revoked(revoked)
        return revoked

    async def get(self, lease_id: uuid.UUID) -> UrlLease | None:
        row = await self._pool.fetchrow(_SQL["get_lease"], lease_id)
        return None if row is None else UrlLease(**row)

    async def find_by_url(self, url: str) -> UrlLease | None:
        row = await self._pool.fetchrow(_SQL["find_lease_by_url"], object_rules.url_digest(url))
        return None if row is None else UrlLease(**row)

    async def list_for_object(self, object_id: uuid.UUID) -> list[UrlLease]:
        return [UrlLease(**row) for row in await self._pool.fetch(_SQL["list_leases"], object_id)]
