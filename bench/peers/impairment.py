"""A UDP forwarder that impairs one direction: drops a share of the packets and delays each other packet
by its own random jitter, both drawn from a seeded RNG so a run can be repeated packet for packet.

Nothing else is done to the traffic: no duplication, no corruption, no rate limit, and no effort to keep
the order — independent delays reorder packets whenever one is delayed more than the gap to the next.

The decision per packet is the pure :func:`decide` (two draws per packet, whatever the outcome, so the
n-th packet's fate depends only on the seed and n); :class:`ImpairmentProxy` is the asyncio shell that
applies it. Packets from the target go back to the last client unimpaired (RTCP of a phone's peer).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Impairment:
    """``loss``: probability (0..1) that a packet is dropped; ``max_jitter``: seconds, each forwarded
    packet is held for a uniform random time in ``[0, max_jitter)``."""

    loss: float = 0.03
    max_jitter: float = 0.030

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss must be within 0..1, got {self.loss!r}")
        if not self.max_jitter >= 0.0:
            raise ValueError(f"max_jitter must be >= 0 s, got {self.max_jitter!r}")


@dataclass(frozen=True, slots=True)
class Fate:
    """What happens to one packet: dropped, or forwarded after ``delay`` seconds."""

    dropped: bool
    delay: float


def decide(impairment: Impairment, rng: random.Random) -> Fate:
    """The fate of the next packet. Always draws twice (loss, then delay) so every packet consumes the
    same amount of randomness and the schedule does not shift after a drop."""
    loss_draw = rng.random()
    delay_draw = rng.random()
    if loss_draw < impairment.loss:
        return Fate(True, 0.0)
    return Fate(False, delay_draw * impairment.max_jitter)


def schedule(impairment: Impairment, seed: int, count: int) -> list[Fate]:
    """The fates of the first ``count`` packets a proxy seeded with ``seed`` forwards."""
    rng = random.Random(seed)
    return [decide(impairment, rng) for _ in range(count)]


def release_order(send_times: list[float], fates: list[Fate]) -> list[int]:
    """Indices of the forwarded packets in the order they leave the proxy, for packets arriving at
    ``send_times`` (ties keep arrival order): how the jitter reorders a stream."""
    if len(send_times) != len(fates):
        raise ValueError("one fate per packet is needed")
    released = sorted(
        (send_time + fate.delay, index)
        for index, (send_time, fate) in enumerate(zip(send_times, fates, strict=True))
        if not fate.dropped
    )
    return [index for _, index in released]


class ImpairmentProxy(asyncio.DatagramProtocol):
    """Listens on one UDP socket: datagrams from anyone but ``target`` are impaired and forwarded to
    ``target`` from this socket; datagrams from ``target`` go straight back to the last sender."""

    def __init__(self, target: Address, impairment: Impairment, seed: int) -> None:
        self.target = target
        self.impairment = impairment
        self._rng = random.Random(seed)
        self._transport: asyncio.DatagramTransport | None = None
        self._client: Address | None = None
        self._pending: set[asyncio.TimerHandle] = set()
        self.received = 0
        self.dropped = 0
        self.forwarded = 0
        self.returned = 0

    @classmethod
    async def start(
        cls, target: Address, impairment: Impairment, seed: int, host: str = "127.0.0.1"
    ) -> ImpairmentProxy:
        loop = asyncio.get_running_loop()
        _, proxy = await loop.create_datagram_endpoint(
            lambda: cls(target, impairment, seed), local_addr=(host, 0)
        )
        return proxy

    @property
    def address(self) -> Address:
        if self._transport is None:
            raise RuntimeError("proxy is not listening")
        host, port = self._transport.get_extra_info("sockname")[:2]
        return (host, port)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        transport = self._transport
        if transport is None:
            return
        if addr == self.target:
            if self._client is not None:
                self.returned += 1
                transport.sendto(data, self._client)
            return
        self._client = addr
        self.received += 1
        fate = decide(self.impairment, self._rng)
        if fate.dropped:
            self.dropped += 1
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def release() -> None:
            if handle is not None:
                self._pending.discard(handle)
            if self._transport is not None:
                self.forwarded += 1
                self._transport.sendto(data, self.target)

        handle = loop.call_later(fate.delay, release)
        self._pending.add(handle)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable from a peer that went away: nothing to do on a bench

    def close(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
