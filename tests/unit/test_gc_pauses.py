"""The node's garbage-collection pause histogram (uc_gc_pause_seconds)."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from edge.server import GcPauses


def test_each_collection_is_observed_under_its_generation() -> None:
    registry = CollectorRegistry()
    pauses = GcPauses(registry)
    pauses.install()
    pauses.install()  # once only
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        pauses.remove()

    def count(generation: str) -> float | None:
        return registry.get_sample_value("uc_gc_pause_seconds_count", {"generation": generation})

    young, full = count("0"), count("2")
    assert young is not None and young >= 1
    assert full is not None and full >= 1
    gc.collect(2)  # after remove: not observed
    assert count("2") == full
    total = registry.get_sample_value("uc_gc_pause_seconds_sum", {"generation": "2"})
    assert total is not None and 0 < total < 5
