"""The asyncio shell around :class:`~signaling.sip.endpoint.SipEndpoint`: bytes in, bytes out, one timer.

    hub = SipTransportHub(endpoint, application=SipRouter())
    await hub.start(host="0.0.0.0", udp_port=5060, tcp_port=5060, tls_port=5061,
                    certfile="cert.pem", keyfile="key.pem")
    app.router.add_get("/sip", sip_websocket_handler(hub))   # WebSocket (RFC 7118) on the aiohttp app
    ...
    await hub.stop()

Every listener hands received bytes to :meth:`SipTransportHub.receive`; after each call into the
endpoint the hub flushes: it sends what the endpoint queued, hands events to the application and
re-arms its single ``loop.call_at`` timer from ``endpoint.get_timer()``. The endpoint's clock is
``loop.time()``. A command the application gives while the hub is handing it an event (``respond`` in
``on_event``) does not flush again: the flush already running sends its output and hands on its events
once ``on_event`` returns, so a message costs one flush, however many answers it produced.

The application is any object with ``on_event(event, hub)`` (see ``signaling.transport.application``);
it answers through :meth:`respond`, starts requests with :meth:`send_request` (or awaits the final
response with :meth:`request`) and sends ACKs for 2xx with :meth:`send_stateless`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from signaling.sip.endpoint import SipEndpoint
from signaling.sip.events import (
    Event,
    ResponseReceived,
    TransactionKey,
    TransactionTimeout,
    TransportError,
)
from signaling.sip.message import Request, Response, SipMessage
from signaling.sip.routing import TransportAddress
from signaling.transport.load_probe import LoadProbe
from signaling.transport.stream import connect_stream, start_stream_server
from signaling.transport.udp import open_udp_socket

log = logging.getLogger(__name__)

# Events that may complete a :meth:`SipTransportHub.request` (a tuple: isinstance is cheaper than with a
# union type, and this runs for every event).
_CLIENT_OUTCOMES = (ResponseReceived, TransactionTimeout, TransportError)


class SipApplication(Protocol):
    """What the hub hands events to. ``on_event`` may return an awaitable (it is then run as a task)."""

    def on_event(self, event: Event, hub: SipTransportHub) -> Awaitable[None] | None: ...


class Connection(Protocol):
    """A live connection-oriented flow (TCP, TLS or WebSocket) the hub can write to."""

    connection_id: str
    transport_name: str
    peer: tuple[str, int]
    server_name: str | None  # TLS we dialled: the name the peer's certificate was checked against

    def write_message(self, data: bytes) -> None: ...

    def close(self) -> None: ...


@dataclasses.dataclass(slots=True)
class HubStats:
    """Transport-level counters (the endpoint keeps the SIP-level ones in ``endpoint.stats``)."""

    udp_datagrams_in: int = 0
    udp_datagrams_out: int = 0
    stream_messages_in: int = 0
    stream_messages_out: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    connections_refused: int = 0
    framing_errors: int = 0
    slow_peers_closed: int = 0
    idle_connections_closed: int = 0
    keepalive_pongs: int = 0
    send_failures: int = 0
    application_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class SipTransportHub:
    def __init__(
        self,
        endpoint: SipEndpoint,
        application: SipApplication | None = None,
        *,
        max_stream_message: int = 65_536,
        max_connections: int = 10_000,
        message_timeout: float = 10.0,
        idle_timeout: float = 900.0,
        tls_client_context: ssl.SSLContext | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.application = application
        self.max_stream_message = max_stream_message
        self.max_connections = max_connections
        self.message_timeout = message_timeout
        self.idle_timeout = idle_timeout
        self.tls_client_context = tls_client_context
        self.stats = HubStats()
        self.udp_address: tuple[str, int] | None = None
        self.tcp_address: tuple[str, int] | None = None
        self.tls_address: tuple[str, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._servers: list[asyncio.Server] = []
        self._connections: dict[str, Connection] = {}
        self._by_peer: dict[tuple[str, str, int], str] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiters: dict[TransactionKey, asyncio.Future[Response]] = {}
        self._connection_counter = 0
        self._flushing = False
        # UDP destination hosts already seen to be IP literals (cleared when full): the check runs for
        # every datagram, and a set lookup is cheaper than parsing the address each time.
        self._literal_hosts: set[str] = set()
        # Per destination that could not be connected to: when it was last logged and how many failures
        # went unlogged since (a dead TLS trunk fails every call's INVITE; one line per 10 s says so).
        self._connect_failures: dict[_ConnectKey, tuple[float, int]] = {}
        # Messages waiting for a connection being opened, by (transport, host, port, server name): a burst
        # of calls to a trunk not connected yet shares one connection instead of opening one each. Bounded
        # by what arrives within a connect attempt (at most ``message_timeout``).
        self._connecting: dict[_ConnectKey, list[bytes]] = {}
        # UDP peers known by name: (name, port) → (expiry on the loop clock, resolved socket address), and
        # the datagrams waiting for a lookup in flight (see _send_to_name).
        self._resolved: dict[tuple[str, int], tuple[float, tuple[Any, ...]]] = {}
        self._resolving: dict[tuple[str, int], list[tuple[bytes, TransportAddress]]] = {}
        self._udp_family = socket.AF_UNSPEC
        # Overload control's probe (when the endpoint has an OverloadControl); probe_port is its source
        # port, -1 without one: the UDP listener compares it first, one int comparison per datagram.
        self.load_probe: LoadProbe | None = None
        self.probe_port = -1

    # ------------------------------------------------------------------ lifecycle

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def now(self) -> float:
        return self.loop.time()

    async def start(
        self,
        host: str,
        udp_port: int | None,
        tcp_port: int | None,
        tls_port: int | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        *,
        advertised_host: str | None = None,
    ) -> None:
        """Open the listeners (port 0 picks a free port; ``None`` disables that transport).

        ``advertised_host`` is what our Via headers carry (default: the listen address, or this
        machine's address for a wildcard listen address)."""
        via_host = advertised_host or _via_host(host)
        loop = self.loop
        if udp_port is not None:
            self._udp, self.udp_address = await open_udp_socket(self, host, udp_port)
            self._udp_family = socket.AF_INET6 if ":" in self.udp_address[0] else socket.AF_INET
            self.endpoint.local_addresses.setdefault("udp", (via_host, self.udp_address[1]))
        if tcp_port is not None:
            server = await start_stream_server(self, host, tcp_port, None)
            self._servers.append(server)
            self.tcp_address = server.sockets[0].getsockname()[:2]
            self.endpoint.local_addresses.setdefault("tcp", (via_host, self.tcp_address[1]))
        if tls_port is not None:
            if not certfile or not keyfile:
                raise ValueError("TLS needs a certificate and a key file")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(certfile, keyfile)
            server = await start_stream_server(self, host, tls_port, context)
            self._servers.append(server)
            self.tls_address = server.sockets[0].getsockname()[:2]
            self.endpoint.local_addresses.setdefault("tls", (via_host, self.tls_address[1]))
        self._sweeper = loop.call_later(1.0, self._sweep)
        if self.endpoint.overload is not None:
            self.load_probe = LoadProbe(self.endpoint.overload, self)
            await self.load_probe.start()

    async def stop(self) -> None:
        if self.load_probe is not None:
            self.load_probe.stop()
        if self._timer is not None:
            self._timer.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self._servers:
            server.close()
        for connection in list(self._connections.values()):
            connection.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for task in list(self._tasks):
            task.cancel()
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.cancel()

    # ------------------------------------------------------------------ commands for the application

    def respond(self, transaction: TransactionKey, response: Response) -> None:
        self.endpoint.respond(transaction, response, self.now())
        self.flush()

    def send_request(self, request: Request, destination: TransportAddress) -> TransactionKey:
        key = self.endpoint.send_request(request, destination, self.now())
        self.flush()
        return key

    async def request(self, request: Request, destination: TransportAddress) -> Response:
        """Send ``request`` and wait for its final response (raises TimeoutError/ConnectionError)."""
        key = self.endpoint.send_request(request, destination, self.now())
        waiter: asyncio.Future[Response] = self.loop.create_future()
        self._waiters[key] = waiter
        self.flush()
        try:
            return await waiter
        finally:
            self._waiters.pop(key, None)

    def send_stateless(self, message: SipMessage, destination: TransportAddress) -> None:
        self.endpoint.send_stateless(message, destination)
        self.flush()

    # ------------------------------------------------------------------ input from the transports

    def receive(self, data: bytes, source: TransportAddress) -> None:
        self.endpoint.receive(data, source, self.now())
        self.flush()

    def register_connection(self, connection: Connection) -> bool:
        """A new flow; ``False`` when over the connection limit (the caller must close it)."""
        if len(self._connections) >= self.max_connections:
            self.stats.connections_refused += 1
            return False
        self._connections[connection.connection_id] = connection
        host, port = connection.peer
        self._by_peer[(connection.transport_name, host, port)] = connection.connection_id
        self.stats.connections_opened += 1
        return True

    def unregister_connection(self, connection: Connection) -> None:
        if self._connections.pop(connection.connection_id, None) is not None:
            self.stats.connections_closed += 1
            host, port = connection.peer
            key = (connection.transport_name, host, port)
            if self._by_peer.get(key) == connection.connection_id:
                del self._by_peer[key]

    def next_connection_id(self, transport: str) -> str:
        self._connection_counter += 1
        return f"{transport}-{self._connection_counter}"

    @property
    def connections(self) -> dict[str, Connection]:
        return self._connections

    # ------------------------------------------------------------------ flushing

    def flush(self) -> None:
        """Send what the endpoint queued and hand its events to the application until both are empty,
        then re-arm the timer. Re-entrant calls (the application answering from ``on_event``, a send
        failure) return at once: the loop below picks up what they queued, in order."""
        if self._flushing:
            return
        self._flushing = True
        endpoint = self.endpoint
        try:
            while True:
                for data, destination in endpoint.datagrams_to_send():
                    self._send(data, destination)
                event = endpoint.next_event()
                if event is None:
                    break
                self._dispatch(event)
        finally:
            self._flushing = False
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.endpoint.get_timer()
        if deadline == self._timer_deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        self.endpoint.handle_timer(self.now())
        self.flush()

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, _CLIENT_OUTCOMES):
            key = event.transaction
            waiter = self._waiters.get(key) if key is not None else None
            if waiter is not None and not waiter.done():
                if isinstance(event, ResponseReceived):
                    if event.response.code >= 200:
                        waiter.set_result(event.response)
                    return
                if isinstance(event, TransactionTimeout):
                    waiter.set_exception(TimeoutError(f"no final response (Timer {event.timer})"))
                else:
                    waiter.set_exception(ConnectionError(event.reason))
                return
        if self.application is None:
            return
        try:
            outcome = self.application.on_event(event, self)
        except Exception:
            self.stats.application_errors += 1
            log.exception("SIP application failed on %s", type(event).__name__)
            return
        if outcome is not None:
            task = asyncio.ensure_future(outcome)
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats.application_errors += 1
            log.error("SIP application task failed", exc_info=task.exception())

    # ------------------------------------------------------------------ output

    def _send(self, data: bytes, destination: TransportAddress) -> None:
        if destination.transport == "udp":
            if self._udp is None:
                self._fail(destination, "no UDP listener")
                return
            host = destination.host
            if host not in self._literal_hosts:
                if not _is_ip_literal(host):
                    self._send_to_name(data, destination)
                    return
                if len(self._literal_hosts) >= _LITERAL_HOSTS_SIZE:
                    self._literal_hosts.clear()
                self._literal_hosts.add(host)
            try:
                self._udp.sendto(data, (host, destination.port))
            except (OSError, ValueError) as error:  # uvloop: ValueError for an address of the other family
                self._fail(destination, str(error))
                return
            self.stats.udp_datagrams_out += 1
            return
        connection = None
        if destination.connection_id is not None:
            connection = self._connections.get(destination.connection_id)
        if connection is None and self._connecting:
            # A connection to this peer is being opened: queue behind what waits for it (the connection
            # may already be registered while the queue is not sent yet; nothing overtakes the queue).
            queued = self._connecting.get(
                (destination.transport, destination.host, destination.port, destination.server_name)
            )
            if queued is not None:
                queued.append(data)
                return
        if connection is None:
            connection_id = self._by_peer.get((destination.transport, destination.host, destination.port))
            connection = self._connections.get(connection_id) if connection_id else None
            if (
                connection is not None
                and destination.server_name is not None
                and connection.server_name != destination.server_name
            ):
                # A flow to this address whose certificate was not checked for the name this request
                # needs (one the peer opened, or one opened for another name): open one that is.
                connection = None
        if connection is not None:
            connection.write_message(data)
            self.stats.stream_messages_out += 1
            return
        if destination.transport in ("tcp", "tls"):
            # The first message for a peer not connected yet opens the connection; the ones after it
            # queue behind it (above) instead of opening their own.
            key = (destination.transport, destination.host, destination.port, destination.server_name)
            self._connecting[key] = [data]
            self._spawn(self._connect_and_send(key, destination))
        else:  # a WebSocket client can only be reached over the connection it opened
            self._fail(destination, "websocket connection is gone")

    async def _connect_and_send(self, key: _ConnectKey, destination: TransportAddress) -> None:
        """Open the connection ``key`` names, then send what was queued for it meanwhile, in order; if it
        cannot be opened, every transaction sending there fails at once (one transport error)."""
        try:
            connection = await connect_stream(self, destination)
        except (OSError, ssl.SSLError) as error:
            self._connecting.pop(key, None)
            self._log_connect_failure(key, error)
            self._fail(destination, f"connect failed: {error}")
            return
        except BaseException:  # cancelled (the hub stops): the next message starts afresh
            self._connecting.pop(key, None)
            raise
        for data in self._connecting.pop(key, []):
            connection.write_message(data)
            self.stats.stream_messages_out += 1

    def _send_to_name(self, data: bytes, destination: TransportAddress) -> None:
        """A datagram to a host name (a Contact, Record-Route or maddr host; trunks are resolved ahead
        by the node). ``sendto`` must not get the name: asyncio's selector loop would resolve it
        synchronously, stalling every call for the length of a DNS lookup, and uvloop refuses it with
        ValueError. Resolved off the loop (A/AAAA for our socket's family) and kept for
        ``NAME_CACHE_SECONDS``: every in-dialog request and response retransmission to a peer known by
        name would otherwise wait for a lookup of its own. Datagrams that arrive while the name is being
        resolved wait for that lookup and go in order."""
        key = (destination.host.strip("[]"), destination.port)
        queued = self._resolving.get(key)
        if queued is not None:
            queued.append((data, destination))
            return
        cached = self._resolved.get(key)
        if cached is not None and cached[0] > self.now():
            self._sendto_address(data, cached[1], destination)
            return
        self._resolving[key] = [(data, destination)]
        self._spawn(self._resolve_and_send(key))

    async def _resolve_and_send(self, key: tuple[str, int]) -> None:
        host, port = key
        try:
            async with asyncio.timeout(self.message_timeout):
                found = await self.loop.getaddrinfo(
                    host, port, family=self._udp_family, type=socket.SOCK_DGRAM
                )
            if not found:
                raise OSError("no address")
        except (OSError, TimeoutError) as error:
            for _data, destination in self._resolving.pop(key, []):
                self._fail(destination, f"cannot resolve {host}: {error or 'timed out'}")
            return
        except BaseException:  # cancelled (the hub stops): a later datagram resolves afresh
            self._resolving.pop(key, None)
            raise
        if key not in self._resolved and len(self._resolved) >= _NAME_CACHE_SIZE:
            self._resolved.clear()
        address = found[0][4]
        self._resolved[key] = (self.now() + NAME_CACHE_SECONDS, address)
        for data, destination in self._resolving.pop(key, []):
            self._sendto_address(data, address, destination)

    def _sendto_address(self, data: bytes, address: tuple[Any, ...], destination: TransportAddress) -> None:
        if self._udp is None:
            self._fail(destination, "no UDP listener")
            return
        try:
            self._udp.sendto(data, address)
        except (OSError, ValueError) as error:
            self._fail(destination, str(error))
            return
        self.stats.udp_datagrams_out += 1

    def _log_connect_failure(self, key: _ConnectKey, error: BaseException) -> None:
        """Say why a TCP/TLS peer cannot be reached (refused, timed out, a certificate not valid for the
        name): the transaction only learns "transport error". At most one line per destination every
        ``CONNECT_FAILURE_LOG_SECONDS``, counting the failures in between; the table is bounded."""
        now = self.now()
        last, unlogged = self._connect_failures.get(key, (-CONNECT_FAILURE_LOG_SECONDS, 0))
        if now - last < CONNECT_FAILURE_LOG_SECONDS:
            self._connect_failures[key] = (last, unlogged + 1)
            return
        if key not in self._connect_failures and len(self._connect_failures) >= _CONNECT_FAILURES_SIZE:
            self._connect_failures.clear()
        self._connect_failures[key] = (now, 0)
        transport, host, port, server_name = key
        log.warning(
            "SIP connection failed: %s %s:%s%s: %s%s",
            transport.upper(),
            host,
            port,
            f" (certificate checked for {server_name})" if server_name else "",
            str(error) or type(error).__name__,
            f" ({unlogged} more failures since the last report)" if unlogged else "",
        )

    def _fail(self, destination: TransportAddress, reason: str) -> None:
        self.stats.send_failures += 1
        self.endpoint.transport_error(destination, reason, self.now())
        self.flush()

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    # ------------------------------------------------------------------ slow and idle peers

    def _sweep(self) -> None:
        now = self.now()
        for connection in list(self._connections.values()):
            check: Callable[[float], str | None] | None = getattr(connection, "timeout_reason", None)
            reason = check(now) if check is not None else None
            if reason == "slow":
                self.stats.slow_peers_closed += 1
                connection.close()
            elif reason == "idle":
                self.stats.idle_connections_closed += 1
                connection.close()
        self._sweeper = self.loop.call_later(1.0, self._sweep)


_LITERAL_HOSTS_SIZE = 4096
# A TCP/TLS peer as connections to it are opened: transport, host, port and the TLS name checked.
_ConnectKey = tuple[str, str, int, str | None]
# A destination that keeps failing to connect is logged once per this many seconds; at most this many
# destinations are remembered for it.
CONNECT_FAILURE_LOG_SECONDS = 10.0
_CONNECT_FAILURES_SIZE = 1024
# How long a UDP peer's name stays resolved (getaddrinfo gives no TTL; trunks are refreshed on their own,
# see edge/trunk_dns.py), and how many names are kept (the table is emptied when full).
NAME_CACHE_SECONDS = 30.0
_NAME_CACHE_SIZE = 1024


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _via_host(host: str) -> str:
    """The host to write in our Via: the listen address, unless it is a wildcard."""
    if host in ("0.0.0.0", "::", ""):
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
