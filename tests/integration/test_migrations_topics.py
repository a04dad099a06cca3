"""``ensure_topics`` against the local Kafka API (Tansu): creates what is missing, once; clear errors."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from storage.kafka.topics import DEFAULT_EVENT_TOPICS, KafkaUnavailable, ensure_topics

KAFKA = os.environ.get("UC_EDGE_TEST_KAFKA", "127.0.0.1:9092")


def kafka_listening() -> bool:
    host, _, port = KAFKA.rpartition(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
        return True
    return False


async def test_creates_missing_topics_once_with_their_partitions() -> None:
    if not kafka_listening():
        if os.environ.get("UC_EDGE_REQUIRE_SERVICES") == "1":
            pytest.fail(f"Kafka is not listening on {KAFKA}; run `bash scripts/services up`")
        pytest.skip(f"Kafka is not listening on {KAFKA}; run `bash scripts/services up`")
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    wanted = {prefix + name: partitions for name, partitions in DEFAULT_EVENT_TOPICS.items()}
    wanted[prefix + "conf-events"] = 2
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        assert sorted(await ensure_topics(KAFKA, wanted)) == sorted(wanted)
        assert await ensure_topics(KAFKA, wanted) == []
        described = await admin.describe_topics(list(wanted))
        partitions = {t["topic"]: len(t["partitions"]) for t in described}
        assert partitions == wanted
    finally:
        await admin.delete_topics(list(wanted))
        await admin.close()


async def test_unreachable_broker_is_one_clear_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(KafkaUnavailable) as caught:
        await ensure_topics(f"127.0.0.1:{port}", {"call-events": 1}, request_timeout_seconds=3)
    assert str(caught.value) == (
        f"cannot reach Kafka at 127.0.0.1:{port} (connection failed) — start it with `scripts/services up` "
        "or set UC_EDGE_KAFKA_BOOTSTRAP"
    )


async def test_bad_partition_count_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        await ensure_topics(KAFKA, {"call-events": 0})
