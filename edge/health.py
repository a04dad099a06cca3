"""Dependency checks shared by ``/readyz`` and ``uc-edge doctor``.

Each check answers within its timeout with a :class:`Check`: ok or not, what was seen, and, when not ok,
one line saying how to fix it. Nothing here raises: an unreachable dependency is a result, not a crash.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from edge.settings import Settings

CHECK_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def check_postgres(settings: Settings) -> Check:
    import asyncpg

    where = _where(settings.db_dsn)
    try:
        conn = await asyncpg.connect(settings.db_dsn, timeout=CHECK_TIMEOUT_SECONDS)
        try:
            version = await conn.fetchval("SHOW server_version")
            existing = {
                row["datname"]
                for row in await conn.fetch(
                    "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])",
                    list(settings.domain_databases.values()),
                )
            }
        finally:
            await conn.close()
    except Exception as exc:
        return Check(
            "postgres",
            False,
            f"cannot reach PostgreSQL at {where} ({_reason(exc)})",
            "start it with `scripts/services up` or set UC_EDGE_DB_DSN",
        )
    missing = [db for db in settings.domain_databases.values() if db not in existing]
    if missing:
        return Check(
            "postgres",
            False,
            f"PostgreSQL {version} at {where}; missing databases: {', '.join(missing)}",
            "run `uc-edge migrate`",
        )
    return Check("postgres", True, f"PostgreSQL {version} at {where}, 4 domain databases present")


async def check_redis(settings: Settings) -> Check:
    import redis.asyncio as aioredis

    where = _where(settings.redis_url)
    client = aioredis.from_url(
        settings.redis_url,
        socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
        socket_timeout=CHECK_TIMEOUT_SECONDS,
    )
    try:
        info = await client.info("server")
        return Check("redis", True, f"Redis {info.get('redis_version', '?')} at {where}")
    except Exception as exc:
        return Check(
            "redis",
            False,
            f"cannot reach Redis at {where} ({_reason(exc)})",
            "start it with `scripts/services up` or set UC_EDGE_REDIS_URL",
        )
    finally:
        await client.aclose()


async def check_kafka(settings: Settings, required_topics: tuple[str, ...] = ()) -> Check:
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(
        bootstrap_servers=settings.kafka_bootstrap,
        request_timeout_ms=int(CHECK_TIMEOUT_SECONDS * 1000),
        client_id=f"uc-edge-health-{settings.node_id}",
    )
    try:
        await asyncio.wait_for(client.bootstrap(), CHECK_TIMEOUT_SECONDS)
        metadata = await asyncio.wait_for(client.fetch_all_metadata(), CHECK_TIMEOUT_SECONDS)
        topics = set(metadata.topics())
    except Exception as exc:
        return Check(
            "kafka",
            False,
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({_reason(exc)})",
            "start it with `scripts/services up` or set UC_EDGE_KAFKA_BOOTSTRAP",
        )
    finally:
        await client.close()
    missing = [t for t in required_topics if t not in topics]
    if missing:
        return Check(
            "kafka",
            False,
            f"Kafka at {settings.kafka_bootstrap}; missing topics: {', '.join(missing)}",
            "run `uc-edge migrate` (it creates the topics)",
        )
    return Check("kafka", True, f"Kafka at {settings.kafka_bootstrap}, {len(topics)} topics")


async def check_s3(settings: Settings) -> Check:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(
        connect_timeout=CHECK_TIMEOUT_SECONDS,
        read_timeout=CHECK_TIMEOUT_SECONDS,
        retries={"max_attempts": 1},
    )
    try:
        async with get_session().create_client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=settings.s3_secret_key,
            config=config,
        ) as s3:
            await s3.head_bucket(Bucket=settings.s3_bucket)
    except Exception as exc:
        reason = _reason(exc)
        fix = "start it with `scripts/services up` or set UC_EDGE_S3_ENDPOINT"
        if "404" in reason or "NoSuchBucket" in reason or "Not Found" in reason:
            fix = f"create the bucket {settings.s3_bucket!r} (or set UC_EDGE_S3_BUCKET)"
        elif "403" in reason or "Forbidden" in reason:
            fix = "check UC_EDGE_S3_ACCESS_KEY / UC_EDGE_S3_SECRET_KEY"
        return Check("s3", False, f"S3 at {settings.s3_endpoint} bucket {settings.s3_bucket}: {reason}", fix)
    return Check("s3", True, f"S3 at {settings.s3_endpoint}, bucket {settings.s3_bucket} reachable")


async def _timed(name: str, check: Awaitable[Check]) -> Check:
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(check, CHECK_TIMEOUT_SECONDS + 2)
    except Exception as exc:
        result = Check(name, False, f"{name} check failed: {_reason(exc)}", "see the server log")
    return Check(
        result.name, result.ok, result.detail, result.fix, time.perf_counter() - started, result.extra
    )


CheckFactory = Callable[[Settings], Awaitable[Check]]


async def check_dependencies(settings: Settings, topics: tuple[str, ...] = ()) -> list[Check]:
    """Run every dependency check concurrently."""
    return list(
        await asyncio.gather(
            _timed("postgres", check_postgres(settings)),
            _timed("redis", check_redis(settings)),
            _timed("kafka", check_kafka(settings, topics)),
            _timed("s3", check_s3(settings)),
        )
    )
