"""Prometheus metrics of the outbox relay, labelled by domain database."""

from __future__ import annotations

from functools import cache

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else REGISTRY
        self.backlog = Gauge("uc_outbox_backlog", "Unsent outbox events.", ["domain"], registry=registry)
        self.lag_seconds = Gauge(
            "uc_outbox_lag_seconds",
            "Age of the oldest unsent outbox row.",
            ["domain"],
            registry=registry,
        )
        self.published = Counter(
            "uc_outbox_published", "Outbox events acknowledged by Kafka.", ["domain"], registry=registry
        )
        self.purged = Counter(
            "uc_outbox_purged",
            "Sent outbox rows (a transaction each) deleted after the retention (sent_retention_seconds).",
            ["domain"],
            registry=registry,
        )
        self.failures = Counter(
            "uc_outbox_publish_failures",
            "Relay cycles that failed (broker or database unavailable, send rejected).",
            ["domain", "reason"],
            registry=registry,
        )

    @staticmethod
    @cache
    def default() -> RelayMetrics:
        """The process-wide instance on the default registry (metrics can be registered only once)."""
        return RelayMetrics(REGISTRY)
