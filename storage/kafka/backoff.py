"""Bounded exponential backoff with jitter, so relays and consumers retrying together do not stampede."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial_seconds: float, max_seconds: float, rng: random.Random | None = None) -> None:
        if not 0 < initial_seconds <= max_seconds:
            raise ValueError(f"backoff needs 0 < initial ({initial_seconds}) <= max ({max_seconds})")
        self._initial = initial_seconds
        self._max = max_seconds
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt: doubles per failure up to the cap, jittered to 50-100 %."""
        ceiling = min(self._max, self._initial * float(2 ** min(self.failures, 32)))
        self.failures += 1
        jitter: float = self._rng.uniform(0.5, 1.0)
        return ceiling * jitter

    def reset(self) -> None:
        self.failures = 0
