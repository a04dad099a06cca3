"""Creating the shared redis-py asyncio client the hot-path adapters use."""

from __future__ import annotations

from redis.asyncio import Redis


def connect(dsn: str, *, max_connections: int = 64, socket_timeout: float = 5.0) -> Redis:
    """A pooled client for ``redis://host:port/db``; replies are decoded to ``str``."""
    return Redis.from_url(
        dsn,
        decode_responses=True,
        max_connections=max_connections,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        health_check_interval=30,
    )


def as_text(value: str | bytes) -> str:
    """Adapters accept clients with or without ``decode_responses``."""
    return value.decode() if isinstance(value, bytes) else value
