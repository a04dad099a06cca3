"""Every SIP transaction timer, derived from T1/T2/T4 in one place (RFC 3261 §17, Table 4; RFC 6026).

Values are seconds. ``reliable`` is True for TCP/TLS/WS/WSS, where retransmission timers never run
and the "wait for retransmissions" timers (D, I, J, K) are zero.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class TimerSettings:
    t1: float = 0.5
    """RTT estimate."""
    t2: float = 4.0
    """Maximum retransmit interval for non-INVITE requests and INVITE responses."""
    t4: float = 5.0
    """Maximum duration a message remains in the network."""
    timer_c: float = 180.0
    """Guard on a Proceeding INVITE (RFC 3261 §16.6 Timer C, > 3 min): no transaction lives forever."""

    def __post_init__(self) -> None:
        if not (0 < self.t1 <= self.t2) or self.t4 <= 0 or self.timer_c <= 0:
            raise ValueError("timers need 0 < T1 <= T2 and positive T4 and Timer C")

    @property
    def timer_a(self) -> float:
        """INVITE request retransmit, initial interval (doubles each time)."""
        return self.t1

    @property
    def timer_b(self) -> float:
        """INVITE client transaction timeout."""
        return 64 * self.t1

    def timer_d(self, reliable: bool) -> float:
        """Wait time for response retransmits (client INVITE, Completed)."""
        return 0.0 if reliable else max(32.0, 64 * self.t1)

    @property
    def timer_e(self) -> float:
        """Non-INVITE request retransmit, initial interval (doubles up to T2)."""
        return self.t1

    @property
    def timer_f(self) -> float:
        """Non-INVITE client transaction timeout."""
        return 64 * self.t1

    @property
    def timer_g(self) -> float:
        """INVITE final response retransmit, initial interval (doubles up to T2)."""
        return self.t1

    @property
    def timer_h(self) -> float:
        """Wait time for ACK receipt (server INVITE, Completed)."""
        return 64 * self.t1

    def timer_i(self, reliable: bool) -> float:
        """Wait time for ACK retransmits (server INVITE, Confirmed)."""
        return 0.0 if reliable else self.t4

    def timer_j(self, reliable: bool) -> float:
        """Wait time for non-INVITE request retransmits (server, Completed)."""
        return 0.0 if reliable else 64 * self.t1

    def timer_k(self, reliable: bool) -> float:
        """Wait time for response retransmits (client non-INVITE, Completed)."""
        return 0.0 if reliable else self.t4

    @property
    def timer_l(self) -> float:
        """RFC 6026: wait time for accepted INVITE request retransmits (server, Accepted)."""
        return 64 * self.t1

    @property
    def timer_m(self) -> float:
        """RFC 6026: wait time for retransmissions of 2xx responses (client, Accepted)."""
        return 64 * self.t1

    @property
    def server_non_invite_guard(self) -> float:
        """A non-INVITE server transaction the TU never answers ends when the client's Timer F has."""
        return 64 * self.t1

    def next_interval(self, current: float, *, cap_at_t2: bool) -> float:
        """Exponential back-off: A doubles without bound, E/G double up to T2."""
        doubled = 2 * current
        return min(doubled, self.t2) if cap_at_t2 else doubled


DEFAULT_TIMERS = TimerSettings()
