"""An in-memory ``MediaControl`` that records what it was asked, for call-control unit tests.

No sockets, no clock. It keeps the port's rules that callers can get wrong — unknown endpoints and
exhausted ports raise ``MediaError``, ``connect`` needs two distinct endpoints, destroy frees the
endpoint — and lets a test inject the events the real plane would publish (``emit``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from media.control import LocalMedia, MediaError, MediaEvent, QualityReport, QualitySnapshot, StreamParams


@dataclass
class FakeMediaControl:
    address: str = "127.0.0.1"
    first_port: int = 40000
    max_endpoints: int = 1000
    calls: list[tuple[str, tuple[object, ...]]] = field(default_factory=list)
    """Every call made, in order: ``("connect", ("e1", "e2"))``…"""
    params: dict[str, StreamParams] = field(default_factory=dict)
    connections: set[frozenset[str]] = field(default_factory=set)
    echoing: set[str] = field(default_factory=set)
    dtmf_sent: list[tuple[str, str, int]] = field(default_factory=list)
    snapshots: dict[str, QualitySnapshot] = field(default_factory=dict)
    """What ``destroy`` returns per endpoint (default: an empty snapshot)."""
    endpoints: dict[str, LocalMedia] = field(default_factory=dict)
    _next: int = 0
    _queue: asyncio.Queue[MediaEvent] | None = None

    def _record(self, name: str, *args: object) -> None:
        self.calls.append((name, args))

    def _check(self, endpoint_id: str) -> None:
        if endpoint_id not in self.endpoints:
            raise MediaError(f"unknown media endpoint {endpoint_id!r}")

    async def create_endpoint(self, call_id: str, leg_id: str) -> LocalMedia:
        self._record("create_endpoint", call_id, leg_id)
        if len(self.endpoints) >= self.max_endpoints:
            raise MediaError("no free RTP port")
        self._next += 1
        port = self.first_port + 2 * self._next
        media = LocalMedia(f"{call_id}/{leg_id}/{self._next}", self.address, port, port + 1)
        self.endpoints[media.endpoint_id] = media
        return media

    async def configure(self, endpoint_id: str, params: StreamParams) -> None:
        self._record("configure", endpoint_id, params)
        self._check(endpoint_id)
        self.params[endpoint_id] = params

    async def connect(self, a: str, b: str) -> None:
        self._record("connect", a, b)
        self._check(a)
        self._check(b)
        if a == b:
            raise MediaError("cannot connect an endpoint to itself (use echo)")
        self.connections = {pair for pair in self.connections if a not in pair and b not in pair}
        self.echoing -= {a, b}
        self.connections.add(frozenset((a, b)))

    async def disconnect(self, a: str, b: str) -> None:
        self._record("disconnect", a, b)
        self.connections.discard(frozenset((a, b)))

    async def echo(self, endpoint_id: str) -> None:
        self._record("echo", endpoint_id)
        self._check(endpoint_id)
        self.connections = {pair for pair in self.connections if endpoint_id not in pair}
        self.echoing.add(endpoint_id)

    async def play(self, endpoint_id: str, source: str, *, loop: bool = False) -> str:
        self._record("play", endpoint_id, source, loop)
        self._check(endpoint_id)
        return f"{endpoint_id}/play/{len(self.calls)}"

    async def send_dtmf(self, endpoint_id: str, digit: str, duration_ms: int = 100) -> None:
        self._record("send_dtmf", endpoint_id, digit, duration_ms)
        self._check(endpoint_id)
        self.dtmf_sent.append((endpoint_id, digit, duration_ms))

    async def destroy(self, endpoint_id: str) -> QualitySnapshot:
        self._record("destroy", endpoint_id)
        self._check(endpoint_id)
        del self.endpoints[endpoint_id]
        self.params.pop(endpoint_id, None)
        self.echoing.discard(endpoint_id)
        self.connections = {pair for pair in self.connections if endpoint_id not in pair}
        snapshot = self.snapshots.get(endpoint_id, QualitySnapshot())
        self.emit(QualityReport(endpoint_id, snapshot))
        return snapshot

    def emit(self, event: MediaEvent) -> None:
        """Publish an event as the real plane would (a test drives call control with it)."""
        self._events().put_nowait(event)

    def connected(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.connections

    def _events(self) -> asyncio.Queue[MediaEvent]:
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._queue

    async def events(self) -> AsyncIterator[MediaEvent]:
        queue = self._events()
        while True:
            yield await queue.get()
