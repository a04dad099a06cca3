"""Overload control for new calls (sans-IO): shed new INVITEs while incoming SIP waits too long.

A SIP node past its capacity over UDP collapses unless it refuses work: every message waits longer in the
socket buffer, past T1 (500 ms) the peers retransmit, the retransmissions are more work still, and the
node ends up completing a fraction of the calls it could (measured on b2bua-cps: offered 350 calls/s on a
core good for ~250, the 200s came back at 204/s with 6,394 retransmissions and a 1 s queue).

The measure that shows it first is how long a message waits before the node reads it. The transport shell
sends a probe datagram to its own SIP socket every ``probe_interval`` and reports when each one left
(:meth:`probe_sent`) and came back (:meth:`probe_returned`): it waits in the same socket queue, then for
the same event loop, as every request. What counts is a standing queue, not a burst (CoDel's insight,
RFC 8289): the wait is the *smallest* one measured over the last ``window``, and nothing is refused until
every wait measured for a whole window was above the target — a garbage collection, a slow commit or a
one-off stall of the loop refuses nothing (what queued behind it drains within the window), a queue
that stays does. A probe out for longer than the window counts with its age (the queue in front of it
has stood that long), so a queue that builds fast shows before a probe gets through it; a probe
returning retires the older ones (the kernel dropped them, or they are behind it). Without a UDP
listener the shell reports the event loop's timer lateness instead (:meth:`sample`).

The rule (RFC 7339's loss-based throttling, applied by the node to itself): with the wait at or below
``target_delay`` every new call is admitted; above ``limit_delay`` none; in between, the share refused
grows in proportion, admitted evenly (a running credit, no randomness). Only dialog-creating INVITEs are
refused — with a stateless 503, which costs a parse and a send and keeps no transaction. In-dialog
requests, ACKs, CANCELs and responses always go through: they finish calls already admitted. A refused
INVITE's retransmission is refused again (its transaction key is remembered for 64*T1, a bounded number
of them), so no call starts for a request that was already answered.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Hashable

from signaling.sip.message import new_tag

__all__ = ["OverloadConfig", "OverloadControl", "OverloadEpisode"]


@dataclasses.dataclass(frozen=True, slots=True)
class OverloadConfig:
    # Seconds a message may wait (standing) before any new call is refused, and from which every new call
    # is: low, because a standing queue makes every call cost more (the settings' comment has figures);
    # the limit well below T1, before retransmissions.
    target_delay: float = 0.015
    limit_delay: float = 0.15
    probe_interval: float = 0.05
    window: float = 0.5  # the wait is the least measured over this long: a standing queue, not a burst
    retry_after: int | None = None  # seconds for Retry-After on the 503; None sends none (see settings)
    remember_refused: float = 32.0  # 64*T1: how long a refused INVITE's retransmission is refused again
    max_remembered: int = 20_000
    quiet_period: float = 5.0  # an episode ends after this long without refusing anything

    def __post_init__(self) -> None:
        if not 0 < self.target_delay < self.limit_delay:
            raise ValueError(
                f"overload delays must satisfy 0 < target < limit: {self.target_delay}, {self.limit_delay}"
            )
        if not 0 < self.probe_interval < self.window:
            raise ValueError("overload probe interval must be positive and shorter than the window")


@dataclasses.dataclass(slots=True)
class OverloadEpisode:
    """One stretch of shedding, for the log line that opens it and the one that closes it."""

    started: float
    refused: int = 0
    admitted: int = 0
    peak_delay: float = 0.0
    last_refusal: float = 0.0


class OverloadControl:
    """Admission of new calls from the measured queueing delay (see the module docstring)."""

    def __init__(self, config: OverloadConfig | None = None) -> None:
        self.config = config or OverloadConfig()
        retry_after = self.config.retry_after
        self.response_headers: tuple[tuple[str, str], ...] = (
            (("Retry-After", str(retry_after)),) if retry_after else ()
        )
        self.refused = 0  # monotonic counters, for metrics
        self.probes_lost = 0
        self.episode: OverloadEpisode | None = None
        self._samples: collections.deque[tuple[float, float]] = collections.deque()  # (measured at, wait)
        self._last = 0.0  # the last wait measured, for when the window holds none
        self._above_since: float | None = None  # every wait measured since then was above the target
        self._outstanding: dict[int, float] = {}  # probe sequence -> sent at, oldest first
        self._next_probe = 0
        self._credit = 0.0
        # Refused INVITEs' transaction keys -> (forget at, To tag of the 503), oldest first.
        self._refused: dict[Hashable, tuple[float, str]] = {}

    # ------------------------------------------------------------------ measuring

    def probe_sent(self, now: float) -> int:
        """A probe leaves now; returns its sequence number (what the probe datagram carries)."""
        sequence = self._next_probe
        self._next_probe += 1
        self._outstanding[sequence] = now
        return sequence

    def probe_returned(self, sequence: int, now: float) -> None:
        sent = self._outstanding.pop(sequence, None)
        if sent is None:
            return  # already retired, or not ours
        self._add(now, now - sent)
        while self._outstanding:
            oldest = next(iter(self._outstanding))
            if oldest > sequence:
                break
            del self._outstanding[oldest]  # behind this one on a FIFO socket: it was dropped
            self.probes_lost += 1

    def sample(self, delay: float, now: float) -> None:
        """A wait measured some other way (the event loop's timer lateness)."""
        self._add(now, max(0.0, delay))

    def _add(self, now: float, delay: float) -> None:
        samples = self._samples
        samples.append((now, delay))
        self._last = delay
        if delay <= self.config.target_delay:
            self._above_since = None
        elif self._above_since is None:
            self._above_since = now
        horizon = now - self.config.window
        while samples[0][0] < horizon:
            samples.popleft()

    def delay(self, now: float) -> float:
        """How long a message waits now: the least wait measured within the window, or the age of a probe
        out for longer than the window."""
        horizon = now - self.config.window
        waits = [wait for at, wait in self._samples if at >= horizon]
        estimate = min(waits) if waits else self._last
        age = self._oldest_probe_age(now)
        return max(estimate, age) if age > self.config.window else estimate

    def standing(self, now: float) -> bool:
        """Whether the queue has stood above the target for a whole window (see the module docstring)."""
        window = self.config.window
        above_since = self._above_since
        return (above_since is not None and now - above_since >= window) or self._oldest_probe_age(
            now
        ) >= window

    def refusal_share(self, now: float) -> float:
        """The share of new calls refused now: 0 without a standing queue or up to the target, 1 from the
        limit, in proportion between."""
        if not self.standing(now):  # the usual case, decided without reading the window
            return 0.0
        return self._share_at(self.delay(now))

    def _share_at(self, delay: float) -> float:
        config = self.config
        excess = delay - config.target_delay
        if excess <= 0:
            return 0.0
        return min(1.0, excess / (config.limit_delay - config.target_delay))

    def _oldest_probe_age(self, now: float) -> float:
        outstanding = self._outstanding
        return now - next(iter(outstanding.values())) if outstanding else 0.0

    # ------------------------------------------------------------------ deciding

    def refusal_tag(self, key: Hashable, now: float) -> str | None:
        """For a new dialog-creating INVITE with transaction ``key``: ``None`` to admit it, or the To tag
        of the 503 that refuses it (the same one for each retransmission of a refused INVITE)."""
        remembered = self._refused.get(key)
        if remembered is not None:
            if remembered[0] > now:
                return remembered[1]
            del self._refused[key]
        delay = self.delay(now) if self.standing(now) else 0.0
        share = self._share_at(delay)
        episode = self.episode
        if share <= 0.0:
            self._credit = 0.0
            if episode is not None:
                episode.admitted += 1
            return None
        if episode is None:
            episode = self.episode = OverloadEpisode(started=now)
        episode.peak_delay = max(episode.peak_delay, delay)
        if share < 1.0:
            self._credit += 1.0 - share
            if self._credit >= 1.0:
                self._credit -= 1.0
                episode.admitted += 1
                return None
        tag = new_tag()
        self._forget_old(now)
        self._refused[key] = (now + self.config.remember_refused, tag)
        self.refused += 1
        episode.refused += 1
        episode.last_refusal = now
        return tag

    def ended_episode(self, now: float) -> OverloadEpisode | None:
        """The episode that is over at ``now`` (nothing refused for ``quiet_period``), once; else None."""
        episode = self.episode
        if episode is None or now - max(episode.last_refusal, episode.started) < self.config.quiet_period:
            return None
        self.episode = None
        return episode

    def _forget_old(self, now: float) -> None:
        refused = self._refused
        while refused:
            oldest = next(iter(refused))
            if refused[oldest][0] > now and len(refused) < self.config.max_remembered:
                break
            del refused[oldest]

    @property
    def remembered(self) -> int:
        return len(self._refused)

    @property
    def outstanding_probes(self) -> int:
        return len(self._outstanding)
