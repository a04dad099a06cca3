"""How one wake-up of the relay spends its claims: one for a short batch, a drain for a backlog until a
batch comes back short."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from storage.kafka.metrics import RelayMetrics
from storage.kafka.publisher import KafkaPublisher, ProducerSettings
from storage.kafka.relay import OutboxRelay, RelayConfig


class ScriptedRelay(OutboxRelay):
    """A relay whose batches claim the given row counts in turn (0 once they run out); no database."""

    def __init__(self, claim_sizes: list[int], batch_size: int = 10) -> None:
        super().__init__(
            RelayConfig(domain="test", dsn="postgresql://unused", batch_size=batch_size, batches_in_flight=1),
            KafkaPublisher(ProducerSettings(bootstrap_servers="127.0.0.1:1")),
            metrics=RelayMetrics(CollectorRegistry()),
        )
        self.claim_sizes = list(claim_sizes)
        self.batches = 0

    async def _relay_batch(self) -> tuple[int, int, bool]:
        self.batches += 1
        claimed = self.claim_sizes.pop(0) if self.claim_sizes else 0
        return claimed, claimed, claimed >= self.config.batch_size


async def test_a_short_batch_ends_the_wakeup_and_arms_the_next_one() -> None:
    relay = ScriptedRelay([4, 3])
    assert await relay._relay_wakeup() == 4
    assert relay.batches == 1  # the 3 rows committed meanwhile wait for the next wake-up
    assert relay._wakeup.is_set()  # ... which is armed, so they are not left to the poll interval


async def test_an_empty_claim_leaves_the_relay_idle() -> None:
    relay = ScriptedRelay([])
    assert await relay._relay_wakeup() == 0
    assert relay.batches == 1 and not relay._wakeup.is_set()


async def test_a_full_batch_drains_the_backlog_until_a_batch_comes_back_short() -> None:
    relay = ScriptedRelay([10, 10, 7, 2])
    assert await relay._relay_wakeup() == 27
    # Under steady commits a claim is rarely empty: the 2 rows committed meanwhile wait a linger.
    assert relay.batches == 3 and relay._wakeup.is_set()


async def test_a_plain_drain_goes_on_until_nothing_is_claimable() -> None:
    relay = ScriptedRelay([10, 7, 2])
    assert await relay.drain() == 19
    assert relay.batches == 4  # through the short batches, up to an empty claim
