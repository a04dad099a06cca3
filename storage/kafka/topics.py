"""Create the event topics (``call-events``, ``cdr-events``, ``conf-events``) when they are absent.

Works against Apache Kafka and the local Tansu broker (which supports create/list/describe/delete but not
``create_partitions``: an existing topic keeps its partition count, it is never altered here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

DEFAULT_EVENT_TOPICS: dict[str, int] = {"call-events": 3, "cdr-events": 3, "conf-events": 3}
BOOTSTRAP_SETTING = "UC_EDGE_KAFKA_BOOTSTRAP"


class KafkaUnavailable(Exception):
    """The broker cannot be reached or refused the request; the message says how to fix it."""


async def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int] | None = None,
    *,
    replication_factor: int = 1,
    request_timeout_seconds: float = 10.0,
) -> list[str]:
    """Create each of ``topics`` (``{name: partitions}``) that does not exist; returns the created names.

    Raises :class:`KafkaUnavailable` with a one-line message when the broker does not answer in time.
    """
    wanted = dict(DEFAULT_EVENT_TOPICS if topics is None else topics)
    for name, partitions in wanted.items():
        if not name or partitions < 1:
            raise ValueError(f"topic {name!r} needs a name and at least one partition, got {partitions}")
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(request_timeout_seconds * 1000),
        client_id="uc-edge-topics",
    )
    try:
        async with asyncio.timeout(request_timeout_seconds):
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [name for name in wanted if name not in existing]
            created: list[str] = []
            for name in missing:
                try:
                    await admin.create_topics(
                        [NewTopic(name, num_partitions=wanted[name], replication_factor=replication_factor)]
                    )
                except TopicAlreadyExistsError:
                    continue  # another node created it meanwhile
                created.append(name)
            return created
    except (TimeoutError, KafkaConnectionError, OSError) as error:
        reason = "timed out" if isinstance(error, TimeoutError) else "connection failed"
        raise KafkaUnavailable(
            f"cannot reach Kafka at {bootstrap} ({reason}) — start it with `scripts/services up` "
            f"or set {BOOTSTRAP_SETTING}"
        ) from None
    except KafkaError as error:
        raise KafkaUnavailable(f"Kafka at {bootstrap} refused to create topics: {error!r}") from None
    finally:
        await admin.close()
