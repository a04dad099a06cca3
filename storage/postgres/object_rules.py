"""Object-index and URL-lease rules shared by the PostgreSQL adapters and the fakes, and their audit log.

Issuing and revoking a pre-signed URL is a security event: besides the lease row, each one is written to
the ``uc_edge.audit`` log (the data model's audit-log category "pre-signed URL issue/revoke").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import structlog

from storage.ports import (
    MAX_LEASE_SECONDS,
    IndexedObject,
    InvalidStateChange,
    NewLease,
    NotFoundError,
    RetentionViolation,
    UrlLease,
)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
audit_log = structlog.get_logger("uc_edge.audit")


def url_digest(url: str) -> str:
    """What a lease keeps of its URL (a bearer secret): the SHA-256, enough to recognise it later."""
    return hashlib.sha256(url.encode()).hexdigest()


def check_available(size_bytes: int, checksum_sha256: str | None) -> None:
    if size_bytes < 0:
        raise ValueError("size_bytes must not be negative")
    if checksum_sha256 is not None and not _SHA256.match(checksum_sha256):
        raise ValueError("checksum_sha256 must be 64 lower-case hex digits")


def check_pending(obj: IndexedObject) -> None:
    if obj.status != "pending":
        raise InvalidStateChange(f"object {obj.object_id} is {obj.status}, not pending")


def check_deletable(obj: IndexedObject, at: dt.datetime) -> None:
    if at < obj.retention_until:
        raise RetentionViolation(
            f"object {obj.storage_key} is retained until {obj.retention_until.isoformat()}; not deleted"
        )


def check_lease(lease: NewLease, obj: IndexedObject | None, issued_at: dt.datetime) -> None:
    if obj is None:
        raise NotFoundError(f"no indexed object {lease.object_id}")
    if obj.status != "available":
        raise InvalidStateChange(
            f"object {obj.storage_key} is {obj.status}; URLs are issued for available ones"
        )
    life = (lease.expires_at - issued_at).total_seconds()
    if not 0 < life <= MAX_LEASE_SECONDS:
        raise ValueError(
            f"a URL lease must expire within (0, {MAX_LEASE_SECONDS}] s of its issue, got {life:.0f} s"
        )


def check_revocation(revoked_by: str, reason: str | None) -> None:
    if not revoked_by or len(revoked_by) > 255:
        raise ValueError("revoked_by must be 1-255 characters")
    if reason is not None and len(reason) > 1024:
        raise ValueError("reason is longer than 1024 characters")


def log_issued(lease: UrlLease, obj: IndexedObject) -> None:
    audit_log.info(
        "presigned_url.issued",
        lease_id=str(lease.lease_id),
        object_id=str(obj.object_id),
        storage_key=obj.storage_key,
        issued_to=lease.issued_to,
        purpose=lease.purpose,
        decision_id=str(lease.decision_id) if lease.decision_id else None,
        expires_at=lease.expires_at.isoformat(),
        correlation_id=str(lease.correlation_id) if lease.correlation_id else None,
        call_id=str(obj.call_id) if obj.call_id else None,
    )


def log_revoked(lease: UrlLease) -> None:
    audit_log.info(
        "presigned_url.revoked",
        lease_id=str(lease.lease_id),
        object_id=str(lease.object_id),
        revoked_by=lease.revoked_by,
        reason=lease.revoke_reason,
    )
