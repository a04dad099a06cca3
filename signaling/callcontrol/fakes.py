"""An in-memory ``MediaControl`` that records every call (for call-control tests; no sockets, no RTP).

Its coroutines never suspend, so tests without an event loop can run them to completion; ``events()``
needs a running loop (the asyncio service reads it) and yields what :meth:`emit` pushed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from media.control import LocalMedia, MediaError, MediaEvent, QualitySnapshot, StreamParams


@dataclass
class FakeEndpoint:
    call_id: str
    leg_id: str
    local: LocalMedia
    params: StreamParams | None = None
    echo: bool = False
    destroyed: bool = False
    dtmf: list[tuple[str, int]] = field(default_factory=list)


class RecordingMediaControl:
    """Endpoints on ``address`` with ports from ``first_port`` upwards; ``calls`` logs every request."""

    def __init__(self, address: str = "192.0.2.1", first_port: int = 30000, *, fail_creates: int = 0) -> None:
        self.address = address
        self._next_port = first_port
        self.fail_creates = fail_creates
        self.endpoints: dict[str, FakeEndpoint] = {}
        self.connections: set[frozenset[str]] = set()
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self._counter = 0
        self._events: asyncio.Queue[MediaEvent] | None = None
        self._pending: list[MediaEvent] = []

    def _endpoint(self, endpoint_id: str) -> FakeEndpoint:
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None or endpoint.destroyed:
            raise MediaError(f"no endpoint {endpoint_id}")
        return endpoint

    async def create_endpoint(self, call_id: str, leg_id: str) -> LocalMedia:
        self.calls.append(("create_endpoint", (call_id, leg_id)))
        if self.fail_creates:
            self.fail_creates -= 1
            raise MediaError("no free RTP port")
        self._counter += 1
        port = self._next_port
        self._next_port += 2
        local = LocalMedia(f"ep-{self._counter}", self.address, port, port + 1)
        self.endpoints[local.endpoint_id] = FakeEndpoint(call_id, leg_id, local)
        return local

    async def configure(self, endpoint_id: str, params: StreamParams) -> None:
        self.calls.append(("configure", (endpoint_id, params)))
        self._endpoint(endpoint_id).params = params

    async def connect(self, a: str, b: str) -> None:
        self.calls.append(("connect", (a, b)))
        self._endpoint(a), self._endpoint(b)
        self.connections.add(frozenset((a, b)))

    async def disconnect(self, a: str, b: str) -> None:
        self.calls.append(("disconnect", (a, b)))
        self.connections.discard(frozenset((a, b)))

    async def echo(self, endpoint_id: str) -> None:
        self.calls.append(("echo", (endpoint_id,)))
        self._endpoint(endpoint_id).echo = True

    async def play(self, endpoint_id: str, source: str, *, loop: bool = False) -> str:
        self.calls.append(("play", (endpoint_id, source, loop)))
        self._endpoint(endpoint_id)
        return f"play-{len(self.calls)}"

    async def send_dtmf(self, endpoint_id: str, digit: str, duration_ms: int = 100) -> None:
        self.calls.append(("send_dtmf", (endpoint_id, digit, duration_ms)))
        self._endpoint(endpoint_id).dtmf.append((digit, duration_ms))

    async def destroy(self, endpoint_id: str) -> QualitySnapshot:
        self.calls.append(("destroy", (endpoint_id,)))
        endpoint = self._endpoint(endpoint_id)
        endpoint.destroyed = True
        self.connections = {pair for pair in self.connections if endpoint_id not in pair}
        return QualitySnapshot(codec=endpoint.params.send_format.encoding if endpoint.params else "")

    # -- events ------------------------------------------------------------------------------

    def emit(self, event: MediaEvent) -> None:
        if self._events is None:
            self._pending.append(event)
        else:
            self._events.put_nowait(event)

    async def events(self) -> AsyncIterator[MediaEvent]:
        if self._events is None:
            self._events = asyncio.Queue()
            for event in self._pending:
                self._events.put_nowait(event)
            self._pending.clear()
        while True:
            yield await self._events.get()

    # -- what tests look at ------------------------------------------------------------------

    def live(self) -> list[FakeEndpoint]:
        return [endpoint for endpoint in self.endpoints.values() if not endpoint.destroyed]

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]
