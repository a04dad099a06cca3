"""Symmetric RTP / latching (pure): learn where a NATed peer really sends from, then ignore the rest.

Before the latch, valid packets from any address are accepted while the first address to deliver
``learn_count`` consecutive valid packets wins. A valid packet is RTP version 2 (guaranteed by parsing),
with the expected SSRC when one was signalled, and a negotiated payload type. After the latch only the
latched address is accepted; everything else is counted and dropped. A phone behind a NAT whose binding
changed (or which restarted) can take the latch over, per ``RelatchPolicy``, once the latched address
has been silent for ``relatch_after`` seconds and the newcomer delivers ``learn_count`` valid packets.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Protocol

Address = tuple[str, int]


class LatchHeader(Protocol):
    """What latching reads from a packet: ``RtpPacket`` and ``RtpHeader`` both qualify."""

    @property
    def ssrc(self) -> int: ...

    @property
    def payload_type(self) -> int: ...


class RelatchPolicy(enum.Enum):
    NEVER = "never"
    """Strict: the first latch is final (for trunks on fixed addresses)."""
    NEW_SSRC_AFTER_SILENCE = "new-ssrc-after-silence"
    """A different address may take over after silence if it sends a new SSRC (phone restarted)."""
    ANY_AFTER_SILENCE = "any-after-silence"
    """A different address may take over after silence with any SSRC (NAT rebinding keeps the SSRC)."""


class Latch:
    __slots__ = (
        "_candidate",
        "_candidate_count",
        "_candidate_ssrc",
        "_expected_ssrc",
        "_last_accepted",
        "_learn_count",
        "_payload_types",
        "_policy",
        "_relatch_after",
        "accepted",
        "address",
        "rejected_foreign",
        "rejected_invalid",
        "relatches",
        "ssrc",
    )

    def __init__(
        self,
        payload_types: Iterable[int],
        *,
        expected_ssrc: int | None = None,
        learn_count: int = 1,
        relatch_after: float = 2.0,
        policy: RelatchPolicy = RelatchPolicy.NEW_SSRC_AFTER_SILENCE,
    ) -> None:
        if learn_count < 1:
            raise ValueError("latching needs learn_count >= 1")
        self._payload_types = frozenset(payload_types)
        self._expected_ssrc = expected_ssrc
        self._learn_count = learn_count
        self._relatch_after = relatch_after
        self._policy = policy
        self.address: Address | None = None
        """The latched source address, None while learning."""
        self.ssrc: int | None = None
        self._last_accepted = 0.0
        self._candidate: Address | None = None
        self._candidate_ssrc: int | None = None
        self._candidate_count = 0
        self.accepted = 0
        self.rejected_foreign = 0
        self.rejected_invalid = 0
        self.relatches = 0

    @property
    def latched(self) -> bool:
        return self.address is not None

    def accept(self, source_addr: Address, packet_header: LatchHeader, now: float) -> bool:
        """Should this RTP packet be processed? Updates the learned address as a side effect."""
        ssrc = packet_header.ssrc
        if packet_header.payload_type not in self._payload_types or (
            self._expected_ssrc is not None and ssrc != self._expected_ssrc
        ):
            self.rejected_invalid += 1
            return False
        address = self.address
        if address is None:
            if self._count_candidate(source_addr, ssrc) >= self._learn_count:
                self._latch(source_addr, ssrc)
            self._last_accepted = now
            self.accepted += 1
            return True
        if source_addr == address:
            self.ssrc = ssrc
            self._last_accepted = now
            self._candidate = None
            self.accepted += 1
            return True
        if self._may_relatch(ssrc, now) and self._count_candidate(source_addr, ssrc) >= self._learn_count:
            self.relatches += 1
            self._latch(source_addr, ssrc)
            self._last_accepted = now
            self.accepted += 1
            return True
        self.rejected_foreign += 1
        return False

    def accept_rtcp(self, source_addr: Address) -> bool:
        """RTCP (muxed or not) is taken from the latched host only, or from anyone while learning."""
        if self.address is None:
            return True
        if source_addr[0] == self.address[0]:
            return True
        self.rejected_foreign += 1
        return False

    def _may_relatch(self, ssrc: int, now: float) -> bool:
        if self._policy is RelatchPolicy.NEVER or now - self._last_accepted < self._relatch_after:
            return False
        return self._policy is RelatchPolicy.ANY_AFTER_SILENCE or ssrc != self.ssrc

    def _count_candidate(self, source_addr: Address, ssrc: int) -> int:
        if source_addr == self._candidate and ssrc == self._candidate_ssrc:
            self._candidate_count += 1
        else:
            self._candidate = source_addr
            self._candidate_ssrc = ssrc
            self._candidate_count = 1
        return self._candidate_count

    def _latch(self, source_addr: Address, ssrc: int) -> None:
        self.address = source_addr
        self.ssrc = ssrc
        self._candidate = None
        self._candidate_count = 0
