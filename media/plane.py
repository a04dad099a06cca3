"""``MediaPlane``: the asyncio implementation of the ``MediaControl`` port (see ``media/control.py``).

It owns the RTP endpoints (``media.endpoint``), decides per connection whether to relay packets
(``media.relay``: send formats match) or transcode (``media.transcode``), plays sources
(``media.player``), regenerates DTMF across legs when telephone-events cannot be relayed, and publishes
events in order on one bounded queue.

Timers: one 20 ms media clock drives local generators (transcoding, playbacks, DTMF being sent) and runs
only while one of them is active; one housekeeping timer (every 0.5 s) runs media timeouts, RTCP
reports and DTMF receiver timeouts for all endpoints. Nothing here blocks: the codec chain runs in a
worker thread (``codec_thread=True``, default) so a hundred transcoded legs do not stall signalling.

Metrics (prometheus_client, registered only when a registry is given): packet/byte/drop counters read
from plain ints at scrape time, active endpoints, transcoding sessions, and per-leg quality
histograms (loss, jitter, RTT, MOS) observed when an endpoint is destroyed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from media.control import (
    LocalMedia,
    MediaError,
    MediaEvent,
    PlaybackFinished,
    QualityReport,
    QualitySnapshot,
    StreamParams,
)
from media.dtmf import digit_to_event
from media.endpoint import EndpointSettings, MediaCounters, RtcpProtocol, RtpEndpoint, same_codec
from media.player import Playback
from media.portpool import PortPool
from media.relay import RelayLink, relays_telephone_event
from media.socketpool import SocketPair, SocketPool
from media.transcode import CodecEngine, TranscodeDirection

log = logging.getLogger(__name__)

TICK_SECONDS = 0.02
_DTMF_TICKER = "dtmf"  # media clock key of the DTMF sender poll
HOUSEKEEPING_SECONDS = 0.5
# Pairs bound at start: two per relayed call, so 1,024 cover ~500 calls at once without a bind on the call
# path (~80 ms to bind at start). 256 covered ~128: at 300 calls/s with 1 s calls the plane bound about
# one socket per call, and b2bua-cps stalled at 300 calls/s where it now runs 350-400 clean.
DEFAULT_SOCKET_POOL = 1024


class _Connection:
    """Two bridged endpoints and whatever currently carries media between them."""

    __slots__ = ("a", "b", "mode", "transcoders")

    def __init__(self, a: RtpEndpoint, b: RtpEndpoint) -> None:
        self.a = a
        self.b = b
        self.mode = "pending"  # until both ends are configured; then "relay" or "transcode"
        self.transcoders: list[TranscodeDirection] = []

    def other(self, endpoint: RtpEndpoint) -> RtpEndpoint:
        return self.b if endpoint is self.a else self.a


class MediaClock:
    """A 20 ms ticker that runs only while something is registered, without drift."""

    def __init__(self, clock: Callable[[], float], period: float = TICK_SECONDS) -> None:
        self._clock = clock
        self._period = period
        self._tickers: dict[object, Callable[[float], None]] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0

    def add(self, key: object, ticker: Callable[[float], None]) -> None:
        self._tickers[key] = ticker
        if self._handle is None:
            self._next = self._clock() + self._period
            self._schedule()

    def remove(self, key: object) -> None:
        self._tickers.pop(key, None)

    def _schedule(self) -> None:
        delay = max(0.0, self._next - self._clock())
        self._handle = asyncio.get_running_loop().call_later(delay, self._run)

    def _run(self) -> None:
        self._handle = None
        now = self._clock()
        for key, ticker in list(self._tickers.items()):
            try:
                ticker(now)
            except Exception:
                log.exception("media clock ticker %r failed; removing it", key)
                self._tickers.pop(key, None)
        if not self._tickers:
            return
        self._next += self._period
        if self._next < now:  # we fell behind (loop stalled): skip ahead rather than burst
            self._next = now + self._period
        self._schedule()

    def close(self) -> None:
        self._tickers.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _MediaCollector(Collector):
    def __init__(self, plane: MediaPlane) -> None:
        self._plane = plane

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        counters = self._plane.counters
        for name, help_text, value in (
            ("uc_media_rtp_packets_received", "RTP/RTCP datagrams received", counters.packets_in),
            ("uc_media_rtp_packets_sent", "RTP datagrams sent", counters.packets_out),
            ("uc_media_rtp_bytes_received", "RTP/RTCP bytes received", counters.bytes_in),
            ("uc_media_rtp_bytes_sent", "RTP bytes sent", counters.bytes_out),
            (
                "uc_media_dropped_latching",
                "RTP dropped: unexpected source or payload type",
                counters.dropped_latching,
            ),
            ("uc_media_dropped_malformed", "RTP/RTCP dropped as malformed", counters.dropped_malformed),
            (
                "uc_media_callback_errors",
                "unexpected errors in packet handling (bugs)",
                counters.callback_errors,
            ),
            ("uc_media_rtcp_received", "RTCP datagrams received", counters.rtcp_in),
            ("uc_media_rtcp_sent", "RTCP datagrams sent", counters.rtcp_out),
            (
                "uc_media_rtp_pairs_bound",
                "RTP/RTCP port pairs bound, at start and on demand: rising under load means "
                "UC_EDGE_RTP_SOCKET_POOL is smaller than the endpoints open at once",
                self._plane._sockets.opened,
            ),
            (
                "uc_media_events_dropped",
                "events dropped because nobody consumed the queue",
                self._plane.events_dropped,
            ),
        ):
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], float(value))
            yield family
        for name, help_text, value in (
            ("uc_media_active_endpoints", "open RTP endpoints", len(self._plane._endpoints)),
            ("uc_media_transcoding_sessions", "transcoding directions running", self._plane.codec.sessions),
            ("uc_media_playbacks", "playbacks running", len(self._plane._playbacks)),
            (
                "uc_media_rtp_pool_idle",
                "bound RTP/RTCP port pairs waiting for a call",
                self._plane._sockets.idle,
            ),
        ):
            gauge = GaugeMetricFamily(name, help_text)
            gauge.add_metric([], float(value))
            yield gauge

    def describe(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        return []


class _QualityHistograms:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.loss = Histogram(
            "uc_media_leg_loss_percent",
            "per-leg receive loss at the end of the leg",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 50),
            registry=registry,
        )
        self.jitter = Histogram(
            "uc_media_leg_jitter_ms",
            "per-leg interarrival jitter at the end of the leg",
            buckets=(1, 2, 5, 10, 20, 40, 80, 160),
            registry=registry,
        )
        self.rtt = Histogram(
            "uc_media_leg_rtt_ms",
            "per-leg RTCP round-trip time at the end of the leg",
            buckets=(5, 10, 25, 50, 100, 200, 400, 800),
            registry=registry,
        )
        self.mos = Histogram(
            "uc_media_leg_mos",
            "per-leg E-model MOS estimate at the end of the leg",
            buckets=(1.5, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4),
            registry=registry,
        )

    def all(self) -> tuple[Histogram, ...]:
        return (self.loss, self.jitter, self.rtt, self.mos)

    def observe(self, snapshot: QualitySnapshot) -> None:
        if snapshot.packets_received == 0:
            return
        self.loss.observe(snapshot.loss_percent)
        self.jitter.observe(snapshot.jitter_ms)
        if snapshot.rtt_ms is not None:
            self.rtt.observe(snapshot.rtt_ms)
        if snapshot.mos is not None:
            self.mos.observe(snapshot.mos)


class MediaPlane:
    """The media plane of one node. Create it inside the running loop's lifetime; ``close()`` at the end.

    ``bind_address`` is where sockets listen; ``advertised_address`` goes into ``LocalMedia`` (our SDP),
    defaulting to ``bind_address``. Ports come from ``rtp_port_min..rtp_port_max`` (RTP even, RTCP + 1).
    ``rtp_socket_pool`` port pairs are bound once and reused across calls (``media.socketpool``); they are
    opened by ``start()``, or by the first ``create_endpoint`` when ``start()`` was not called. 0 opens
    and closes sockets per endpoint.
    """

    def __init__(
        self,
        *,
        rtp_port_min: int,
        rtp_port_max: int,
        bind_address: str = "127.0.0.1",
        advertised_address: str | None = None,
        media_timeout: float = 30.0,
        rtcp_interval: float = 5.0,
        quality_interval: float = 0.0,
        codec_thread: bool = True,
        registry: CollectorRegistry | None = None,
        event_queue_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        rtp_socket_pool: int = DEFAULT_SOCKET_POOL,
    ) -> None:
        self._pool = PortPool(rtp_port_min, rtp_port_max)
        self._bind_address = bind_address
        self._advertised_address = advertised_address or bind_address
        self._settings = EndpointSettings(
            media_timeout=media_timeout, rtcp_interval=rtcp_interval, quality_interval=quality_interval
        )
        self._clock = clock
        self._wallclock = wallclock
        self.counters = MediaCounters()
        self._sockets = SocketPool(self._pool, bind_address, rtp_socket_pool, self.counters)
        self._warm_task: asyncio.Future[int] | None = None
        self._pairs: dict[str, SocketPair] = {}
        self._endpoints: dict[str, RtpEndpoint] = {}
        self._connections: dict[str, _Connection] = {}
        self._playbacks: dict[str, Playback] = {}
        self._dtmf_outputs: set[RtpEndpoint] = set()
        self._ids = itertools.count(1)
        self.codec = CodecEngine(clock, use_thread=codec_thread)
        self._media_clock = MediaClock(clock)
        self._events: asyncio.Queue[MediaEvent] = asyncio.Queue(maxsize=event_queue_size)
        self.events_dropped = 0
        self._housekeeping: asyncio.TimerHandle | None = None
        self._closed = False
        self._histograms = _QualityHistograms(registry)
        self._registry = registry
        self._collector: _MediaCollector | None = None
        if registry is not None:
            self._collector = _MediaCollector(self)
            registry.register(self._collector)

    # -- MediaControl ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the socket pool's pairs now (at node start) rather than at the first call."""
        if self._closed:
            raise MediaError("media plane is closed")
        if self._warm_task is None:
            self._warm_task = asyncio.ensure_future(self._sockets.warm())
        await asyncio.shield(self._warm_task)

    async def create_endpoint(self, call_id: str, leg_id: str) -> LocalMedia:
        if self._closed:
            raise MediaError("media plane is closed")
        if self._warm_task is None or not self._warm_task.done():
            await self.start()
        pair = await self._sockets.acquire()
        if self._closed:  # closed while we waited for a socket
            self._sockets.release(pair)
            raise MediaError("media plane is closed")
        port = pair.port
        endpoint_id = f"{call_id}/{leg_id}/{next(self._ids)}"
        endpoint = RtpEndpoint(
            endpoint_id,
            call_id=call_id,
            leg_id=leg_id,
            address=self._advertised_address,
            rtp_port=port,
            counters=self.counters,
            emit=self._emit,
            clock=self._clock,
            wallclock=self._wallclock,
            settings=self._settings,
        )
        endpoint.attach(pair.rtp, pair.rtcp)
        pair.rtp.set_protocol(endpoint)
        pair.rtcp.set_protocol(RtcpProtocol(endpoint))
        self._pairs[endpoint_id] = pair
        self._endpoints[endpoint_id] = endpoint
        self._ensure_housekeeping()
        return LocalMedia(endpoint_id, self._advertised_address, port, port + 1)

    async def configure(self, endpoint_id: str, params: StreamParams) -> None:
        endpoint = self._endpoint(endpoint_id)
        source_changed = endpoint.configure(params)
        connection = self._connections.get(endpoint_id)
        if connection is not None:
            if source_changed:
                connection.other(endpoint).output.rewriter.source_changed()
            self._build(connection)
        elif endpoint.sink is not None and isinstance(endpoint.sink, RelayLink):
            endpoint.sink.refresh()  # echo

    async def connect(self, a: str, b: str) -> None:
        if a == b:
            raise MediaError("cannot connect an endpoint to itself (use echo)")
        first, second = self._endpoint(a), self._endpoint(b)
        for endpoint_id in (a, b):
            if endpoint_id in self._connections:
                existing = self._connections[endpoint_id]
                await self.disconnect(existing.a.endpoint_id, existing.b.endpoint_id)
            self._stop_echo(self._endpoints[endpoint_id])
        connection = _Connection(first, second)
        self._connections[a] = self._connections[b] = connection
        self._build(connection)

    async def disconnect(self, a: str, b: str) -> None:
        connection = self._connections.get(a)
        if connection is None or connection is not self._connections.get(b):
            return
        self._teardown(connection)
        del self._connections[a], self._connections[b]

    async def echo(self, endpoint_id: str) -> None:
        endpoint = self._endpoint(endpoint_id)
        connection = self._connections.get(endpoint_id)
        if connection is not None:
            await self.disconnect(connection.a.endpoint_id, connection.b.endpoint_id)
        endpoint.sink = RelayLink(endpoint, endpoint)

    async def play(self, endpoint_id: str, source: str, *, loop: bool = False) -> str:
        endpoint = self._endpoint(endpoint_id)
        if endpoint.params is None:
            raise MediaError(f"endpoint {endpoint_id} is not configured yet")
        for playback in list(self._playbacks.values()):
            if playback.endpoint is endpoint:
                playback.stop()
        playback_id = f"{endpoint_id}/play/{next(self._ids)}"
        playback = Playback(
            playback_id,
            endpoint,
            source,
            endpoint.params.send_format,
            loop=loop,
            on_finished=self._playback_finished,
        )
        self._playbacks[playback_id] = playback
        self._media_clock.add(playback, playback.tick)
        return playback_id

    async def stop_playback(self, playback_id: str) -> None:
        """Stop a playback early (a PlaybackFinished still follows)."""
        playback = self._playbacks.get(playback_id)
        if playback is not None:
            playback.stop()

    async def send_dtmf(self, endpoint_id: str, digit: str, duration_ms: int = 100) -> None:
        endpoint = self._endpoint(endpoint_id)
        params = endpoint.params
        if params is None or params.telephone_event is None:
            raise MediaError(f"endpoint {endpoint_id} has no telephone-event negotiated")
        try:
            digit_to_event(digit)
        except ValueError as exc:
            raise MediaError(str(exc)) from None
        if not 20 <= duration_ms <= 5000:
            raise MediaError(f"DTMF duration must be 20..5000 ms, got {duration_ms}")
        self._queue_digit(endpoint, digit, duration_ms / 1000.0)

    async def destroy(self, endpoint_id: str) -> QualitySnapshot:
        endpoint = self._endpoint(endpoint_id)
        connection = self._connections.get(endpoint_id)
        jitter_buffer_delay = 0.0
        if connection is not None:
            for direction in connection.transcoders:
                if direction.source is endpoint:
                    jitter_buffer_delay = direction.jitter_buffer_delay
            await self.disconnect(connection.a.endpoint_id, connection.b.endpoint_id)
        for playback in list(self._playbacks.values()):
            if playback.endpoint is endpoint:
                playback.stop()
        self._dtmf_outputs.discard(endpoint)
        snapshot = endpoint.quality(jitter_buffer_delay)
        endpoint.detach()
        del self._endpoints[endpoint_id]
        self._sockets.release(self._pairs.pop(endpoint_id))
        self._histograms.observe(snapshot)
        self._emit(QualityReport(endpoint_id, snapshot))
        return snapshot

    async def events(self) -> AsyncIterator[MediaEvent]:
        while True:
            yield await self._events.get()

    # -- beyond the port ------------------------------------------------------------------------------

    def endpoint(self, endpoint_id: str) -> RtpEndpoint:
        """The endpoint object (for tests and the bench; call control uses only the port)."""
        return self._endpoint(endpoint_id)

    def connection_mode(self, endpoint_id: str) -> str | None:
        """ "relay", "transcode", "pending" (an end not configured yet), or None when not connected."""
        connection = self._connections.get(endpoint_id)
        return None if connection is None else connection.mode

    def stats(self) -> dict[str, int]:
        return {
            **self.counters.as_dict(),
            "endpoints": len(self._endpoints),
            "ports_free": self._pool.free + self._sockets.idle,
            "rtp_pool_idle": self._sockets.idle,
            "rtp_pairs_opened": self._sockets.opened,
            "transcoding_sessions": self.codec.sessions,
            "codec_overruns": self.codec.overruns,
            "events_dropped": self.events_dropped,
        }

    async def close(self) -> None:
        for endpoint_id in list(self._endpoints):
            await self.destroy(endpoint_id)
        self._closed = True
        if self._warm_task is not None and not self._warm_task.done():
            self._warm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, MediaError):
                await self._warm_task
        self._sockets.close()
        self._media_clock.close()
        self.codec.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None
        if self._registry is not None:
            # Unregister so another plane in the same process (tests, a restarted node) can register.
            for collector in (self._collector, *self._histograms.all()):
                if collector is not None:
                    self._registry.unregister(collector)
            self._registry = None

    # -- internals ------------------------------------------------------------------------------------

    def _endpoint(self, endpoint_id: str) -> RtpEndpoint:
        endpoint = self._endpoints.get(endpoint_id)
        if endpoint is None:
            raise MediaError(f"unknown media endpoint {endpoint_id!r}")
        return endpoint

    def _emit(self, event: MediaEvent) -> None:
        queue = self._events
        if queue.full():
            queue.get_nowait()  # keep the newest: a stale quality report matters less than a timeout
            self.events_dropped += 1
        queue.put_nowait(event)

    def _stop_echo(self, endpoint: RtpEndpoint) -> None:
        sink = endpoint.sink
        if isinstance(sink, RelayLink) and sink.target is endpoint:
            endpoint.sink = None

    def _build(self, connection: _Connection) -> None:
        """(Re)choose relay or transcoding for a connection from both ends' current parameters."""
        self._teardown(connection)
        a, b = connection.a, connection.b
        if a.params is None or b.params is None:
            connection.mode = "pending"
            return
        if same_codec(a.params.send_format, b.params.send_format):
            connection.mode = "relay"
            a.sink = RelayLink(a, b)
            b.sink = RelayLink(b, a)
            for source, target in ((a, b), (b, a)):
                if relays_telephone_event(source, target):
                    source.on_digit = None
                else:
                    source.on_digit = self._regenerate_on(target)
            return
        connection.mode = "transcode"
        try:
            forward = TranscodeDirection(a, b, a.params.send_format, b.params.send_format)
            backward = TranscodeDirection(b, a, b.params.send_format, a.params.send_format)
        except ValueError as exc:
            connection.mode = "pending"
            raise MediaError(str(exc)) from None
        connection.transcoders = [forward, backward]
        for direction in connection.transcoders:
            direction.source.sink = direction
            direction.source.on_digit = self._regenerate_on(direction.target)
            self.codec.add(direction)
        self._media_clock.add(self.codec, self.codec.tick)

    def _teardown(self, connection: _Connection) -> None:
        for endpoint in (connection.a, connection.b):
            endpoint.sink = None
            endpoint.on_digit = None
        for direction in connection.transcoders:
            self.codec.remove(direction)
        connection.transcoders = []
        if not self.codec:
            self._media_clock.remove(self.codec)

    def _regenerate_on(self, target: RtpEndpoint) -> Callable[[str, float], None]:
        def regenerate(digit: str, duration: float) -> None:
            if target.closed or target.params is None or target.params.telephone_event is None:
                return
            self._queue_digit(target, digit, max(duration, 0.04))

        return regenerate

    def _queue_digit(self, endpoint: RtpEndpoint, digit: str, duration: float) -> None:
        params = endpoint.params
        assert params is not None and params.telephone_event is not None
        endpoint.output.send_dtmf(digit, duration, params.telephone_event, self._clock())
        self._dtmf_outputs.add(endpoint)
        self._media_clock.add(_DTMF_TICKER, self._poll_dtmf)

    def _poll_dtmf(self, now: float) -> None:
        for endpoint in list(self._dtmf_outputs):
            endpoint.output.poll_dtmf(now)
            if not endpoint.output.has_pending_dtmf:
                self._dtmf_outputs.discard(endpoint)
        if not self._dtmf_outputs:
            self._media_clock.remove(_DTMF_TICKER)

    def _playback_finished(self, playback: Playback) -> None:
        self._playbacks.pop(playback.playback_id, None)
        self._media_clock.remove(playback)
        self._emit(PlaybackFinished(playback.endpoint.endpoint_id, playback.playback_id))

    def _ensure_housekeeping(self) -> None:
        if self._housekeeping is None and not self._closed:
            self._housekeeping = asyncio.get_running_loop().call_later(
                HOUSEKEEPING_SECONDS, self._run_housekeeping
            )

    def _run_housekeeping(self) -> None:
        self._housekeeping = None
        now = self._clock()
        for endpoint in list(self._endpoints.values()):
            try:
                for event in endpoint.housekeeping(now):
                    self._emit(event)
            except Exception:
                log.exception("housekeeping failed for %s", endpoint.endpoint_id)
        if self._endpoints:
            self._ensure_housekeeping()
