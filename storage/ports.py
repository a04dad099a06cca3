"""Storage ports: the only storage surface core code may depend on.

Each port is a ``typing.Protocol``. Every port has an in-memory fake under ``storage/memory/`` and a real
adapter (``storage/postgres``, ``storage/redis``, ``storage/s3``, ``storage/kafka``); both pass the same
contract tests in ``tests/contract/``.
"""

from __future__ import annotations

# --- relational domains (PostgreSQL) and the event outbox -------------------------------------------------
# (owned by the PostgreSQL/outbox work; add ports above the next marker)

# --- hot path (Redis) and blob store (S3) -----------------------------------------------------------------
# (owned by the Redis/S3 work; add ports below this marker)

#: Longest accepted key part (AOR, call id, node id, routing target, limiter/idempotency key).
MAX_HOT_KEY_LENGTH = 1024

# These imports sit inside this section so that it can be edited without touching the one above.
import math  # noqa: E402, RUF100
from collections.abc import Mapping, Sequence  # noqa: E402, RUF100
from dataclasses import dataclass, field  # noqa: E402, RUF100
from typing import Any, Protocol  # noqa: E402, RUF100

#: The idempotency window the data model asks for (redelivery window of at-least-once consumers).
IDEMPOTENCY_TTL_MIN_SECONDS = 24 * 3600
IDEMPOTENCY_TTL_MAX_SECONDS = 72 * 3600

JsonObject = dict[str, Any]


def check_hot_key(kind: str, value: str) -> str:
    """Reject empty, oversized or non-string key parts with a message naming the offender."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} must be a non-empty string, got {value!r}")
    if len(value) > MAX_HOT_KEY_LENGTH:
        raise ValueError(f"{kind} is {len(value)} characters long, the limit is {MAX_HOT_KEY_LENGTH}")
    return value


def check_ttl(ttl_seconds: float) -> float:
    """A TTL must be a finite number of seconds above one millisecond (Redis' resolution)."""
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int | float):
        raise ValueError(f"TTL must be a number of seconds, got {ttl_seconds!r}")
    if not math.isfinite(ttl_seconds) or ttl_seconds < 0.001:
        raise ValueError(f"TTL must be finite and at least 0.001 s, got {ttl_seconds!r}")
    return float(ttl_seconds)


def check_idempotency_ttl(
    ttl_seconds: float,
    minimum: float = IDEMPOTENCY_TTL_MIN_SECONDS,
    maximum: float = IDEMPOTENCY_TTL_MAX_SECONDS,
) -> float:
    """Callers (consumers, API handlers) check their configured TTL against the 24-72 h window here.

    ``IdempotencyKeys.claim`` itself accepts any positive TTL so contract tests can use short ones.
    """
    check_ttl(ttl_seconds)
    if not minimum <= ttl_seconds <= maximum:
        raise ValueError(
            f"idempotency TTL {ttl_seconds} s is outside the redelivery window [{minimum}, {maximum}] s"
        )
    return float(ttl_seconds)


# ---- location store (registrar bindings) ----


class BindingLimitExceeded(Exception):
    """An AOR would hold more bindings than the store allows (the registrar answers 403/503)."""


@dataclass(frozen=True, slots=True)
class TransportAddress:
    """Where a REGISTER came from; ``connection_id`` names the flow of a connection-oriented transport."""

    transport: str  # "udp", "tcp", "tls", "ws", "wss"
    host: str
    port: int
    connection_id: str | None = None

    def __post_init__(self) -> None:
        if not self.transport or not self.host:
            raise ValueError("transport address needs a transport and a host")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")


@dataclass(frozen=True, slots=True)
class Binding:
    """One registered contact of an address-of-record (RFC 3261 §10, RFC 5626 flows).

    ``expires_at`` and ``updated_at`` are epoch seconds. Two bindings are the same binding when their
    ``binding_id`` matches: the caller's ``binding_key`` when it computed one (the registrar compares
    contact URIs loosely, RFC 3261 §19.1.4), else the (instance-id, reg-id) pair of an RFC 5626 outbound
    registration, else the contact URI as written. ``q`` is None when the contact carried none (sorted
    as 1.0).
    """

    aor: str
    contact_uri: str
    expires_at: float
    q: float | None = None
    call_id: str = ""
    cseq: int = 0
    instance_id: str | None = None
    reg_id: int | None = None
    path: tuple[str, ...] = ()
    received: TransportAddress | None = None
    user_agent: str | None = None
    node_id: str = ""
    updated_at: float = 0.0
    binding_key: str | None = None

    def __post_init__(self) -> None:
        check_hot_key("aor", self.aor)
        check_hot_key("contact_uri", self.contact_uri)
        if not math.isfinite(self.expires_at):
            raise ValueError(f"expires_at must be finite, got {self.expires_at!r}")
        if self.q is not None and not 0.0 <= self.q <= 1.0:
            raise ValueError(f"q must be within [0, 1], got {self.q!r}")
        if self.cseq < 0:
            raise ValueError(f"cseq must not be negative, got {self.cseq}")
        if self.reg_id is not None and self.instance_id is None:
            raise ValueError("reg-id without +sip.instance (RFC 5626 §4.2)")

    @property
    def binding_id(self) -> str:
        if self.binding_key is not None:
            return self.binding_key
        if self.instance_id is not None and self.reg_id is not None:
            return f"outbound:{self.instance_id}:{self.reg_id}"
        return f"contact:{self.contact_uri}"

    def to_json(self) -> JsonObject:
        received = None
        if self.received is not None:
            received = {
                "transport": self.received.transport,
                "host": self.received.host,
                "port": self.received.port,
                "connection_id": self.received.connection_id,
            }
        return {
            "aor": self.aor,
            "contact_uri": self.contact_uri,
            "expires_at": self.expires_at,
            "q": self.q,
            "call_id": self.call_id,
            "cseq": self.cseq,
            "instance_id": self.instance_id,
            "reg_id": self.reg_id,
            "path": list(self.path),
            "received": received,
            "user_agent": self.user_agent,
            "node_id": self.node_id,
            "updated_at": self.updated_at,
            "binding_key": self.binding_key,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Binding:
        received = data.get("received")
        return cls(
            aor=data["aor"],
            contact_uri=data["contact_uri"],
            expires_at=float(data["expires_at"]),
            q=None if data.get("q") is None else float(data["q"]),
            call_id=data.get("call_id", ""),
            cseq=int(data.get("cseq", 0)),
            instance_id=data.get("instance_id"),
            reg_id=data.get("reg_id"),
            path=tuple(data.get("path", ())),
            received=TransportAddress(**received) if received else None,
            user_agent=data.get("user_agent"),
            node_id=data.get("node_id", ""),
            updated_at=float(data.get("updated_at", 0.0)),
            binding_key=data.get("binding_key"),
        )


class LocationStore(Protocol):
    """Registrar bindings per AOR. Expired bindings (``expires_at <= now``) are never returned.

    ``lookup``/``save`` take ``now`` from the caller (the registrar never reads a clock); the other
    methods read the store's own clock (injected into fakes and adapters).
    """

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        """Bindings unexpired at ``now``, in ``list_bindings`` order."""
        ...

    async def save(self, aor: str, upserts: Sequence[Binding], removals: Sequence[str], now: float) -> None:
        """One atomic step: drop the ``removals`` binding ids, then insert or replace ``upserts``.

        An upsert already expired at ``now`` removes its twin. Raises ``BindingLimitExceeded`` (nothing
        written) when the AOR would exceed the store's binding limit.
        """
        ...

    async def upsert(self, aor: str, bindings: Sequence[Binding]) -> None:
        """``save(aor, bindings, [], now=clock())``."""
        ...

    async def remove(self, aor: str, binding_id: str) -> bool: ...

    async def remove_all(self, aor: str) -> int: ...

    async def list_bindings(self, aor: str) -> list[Binding]:
        """Unexpired bindings, highest q first, then most recently updated."""
        ...

    async def count(self, aor: str) -> int: ...

    async def list_aors(self, limit: int = 1000) -> list[str]:
        """AORs with at least one unexpired binding, sorted, at most ``limit``."""
        ...


# ---- active-call cache (session_cache), routing cache ----


@dataclass(frozen=True, slots=True)
class CachedCall:
    call_id: str
    node_id: str
    state: JsonObject
    updated_at: float


class ActiveCallCache(Protocol):
    async def set(self, call_id: str, state: Mapping[str, Any], *, node_id: str, ttl_seconds: float) -> None:
        """Store the call's JSON-able state, owned by ``node_id``, for ``ttl_seconds``."""
        ...

    async def get(self, call_id: str) -> CachedCall | None: ...

    async def delete(self, call_id: str) -> bool: ...

    async def list_by_node(self, node_id: str) -> list[str]:
        """Call ids (sorted) still cached for ``node_id`` - what a survivor cleans up when the node dies."""
        ...

    async def set_heartbeat(self, node_id: str, ttl_seconds: float) -> None: ...

    async def get_heartbeat(self, node_id: str) -> float | None:
        """Epoch seconds of the node's last heartbeat, or None when it expired (node presumed dead)."""
        ...


class RoutingCache(Protocol):
    async def get(self, target: str) -> JsonObject | None: ...

    async def put(self, target: str, result: Mapping[str, Any], ttl_seconds: float) -> None: ...

    async def invalidate(self, target: str) -> bool: ...


# ---- rate limiter, idempotency keys ----


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    remaining: int  # requests still allowed in the current window after this one
    retry_after_seconds: float  # 0 when allowed; else until the oldest counted request leaves the window

    def __bool__(self) -> bool:
        return self.allowed


class RateLimiter(Protocol):
    async def allow(self, key: str, limit: int, window_seconds: float) -> RateDecision:
        """Sliding window: allowed when fewer than ``limit`` requests were allowed in the last window.

        Refused requests are not counted. Atomic under concurrent callers.
        """
        ...

    async def reset(self, key: str) -> None: ...


class IdempotencyKeys(Protocol):
    async def claim(self, key: str, ttl_seconds: float) -> bool:
        """True only for the first claim of ``key`` within its TTL (see ``check_idempotency_ttl``)."""
        ...

    async def release(self, key: str) -> bool:
        """Forget a claim (processing failed, let a redelivery retry). True if it was held."""
        ...

    async def is_claimed(self, key: str) -> bool: ...


# ---- blob store (S3) ----


class BlobStoreError(Exception):
    """Base of every blob-store failure; ``code`` carries the S3 error code when there was one."""

    def __init__(self, message: str, *, code: str = "", key: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.key = key


class NotFound(BlobStoreError):
    """No such key or bucket."""


class NoSuchUpload(BlobStoreError):
    """The multipart upload id is unknown: never created, completed or aborted."""


class EntityTooSmall(BlobStoreError):
    """A non-final part of a multipart upload is below the 5 MiB minimum."""


class InvalidPart(BlobStoreError):
    """A completed part list names a part that was not uploaded, or with a wrong ETag, or out of order."""


class AccessDenied(BlobStoreError):
    """Credentials refused or not allowed to do this."""


class Unavailable(BlobStoreError):
    """The store cannot be reached or answered 5xx; the operation may be retried."""


#: S3's minimum size of every part but the last, and its part-number range.
MIN_MULTIPART_PART_SIZE = 5 * 1024 * 1024
MAX_MULTIPART_PARTS = 10000


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    content_type: str
    last_modified: float
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UploadedPart:
    part_number: int
    etag: str


@dataclass(frozen=True, slots=True)
class MultipartUploadInfo:
    key: str
    upload_id: str
    initiated: float | None


@dataclass(frozen=True, slots=True)
class LifecycleRule:
    """A bucket lifecycle rule as far as the edge uses them (abort stale multipart uploads, expire)."""

    rule_id: str
    prefix: str = ""
    abort_incomplete_multipart_days: int | None = None
    expiration_days: int | None = None
    enabled: bool = True


class BlobStore(Protocol):
    """One bucket of an S3-compatible store. Keys follow DATA_MODEL.md (``recordings/calls/...``)."""

    @property
    def bucket(self) -> str: ...

    async def ensure_bucket(self) -> None: ...

    async def put_object(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Store a small object in one request; returns its ETag (without quotes)."""
        ...

    async def head_object(self, key: str) -> ObjectInfo: ...

    async def get_object(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        """Whole object or the inclusive ``(first, last)`` byte range, bounded by the store's read limit."""
        ...

    async def delete_object(self, key: str) -> None: ...

    async def create_multipart_upload(
        self,
        key: str,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> str: ...

    async def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> UploadedPart: ...

    async def complete_multipart_upload(self, key: str, upload_id: str, parts: Sequence[UploadedPart]) -> str:
        """Assemble the parts (ascending part numbers); raises EntityTooSmall / InvalidPart / NoSuchUpload."""
        ...

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """Drop the upload and its parts; aborting an unknown or already aborted upload is not an error."""
        ...

    async def list_multipart_uploads(self, prefix: str = "") -> list[MultipartUploadInfo]: ...

    async def presign_get(self, key: str, expires_in_seconds: int) -> str:
        """A URL that lets its holder GET ``key`` until it expires (1 s .. 7 days)."""
        ...

    async def put_lifecycle_rules(self, rules: Sequence[LifecycleRule]) -> None:
        """Replace the bucket's lifecycle configuration with ``rules``."""
        ...

    async def get_lifecycle_rules(self) -> list[LifecycleRule]: ...
