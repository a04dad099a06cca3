"""The SIP side of a node: endpoint + transports + the application (registrar, OPTIONS, 405/501).

Composition only: the protocol work lives in ``signaling/``; this module reads the clocks (the loop's
monotonic clock for transactions, wall-clock epoch seconds for registrations and digest nonces, which
every node of a cluster must agree on) and adapts types between the layers.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from edge.logs import get_logger
from edge.metrics import SIP_METRICS, StatsCollector
from edge.settings import Settings
from edge.trunk_dns import TrunkDns
from edge.trunk_registration import TrunkRegistrations
from media.control import MediaControl
from signaling.callcontrol.call import CallEnvironment
from signaling.callcontrol.config import CallControlConfig, parse_trunks
from signaling.callcontrol.router import CallRouter
from signaling.callcontrol.service import CallControlService
from signaling.flood import BanPolicy, FloodConfig, FloodGuard, Verdict
from signaling.registrar import RegisterResult, Registrar, RegistrarConfig
from signaling.sip.dialog import LocalAddress
from signaling.sip.digest import DigestAlgorithm, DigestAuthenticator
from signaling.sip.endpoint import SipEndpoint
from signaling.sip.events import RequestReceived
from signaling.sip.message import ParseLimits, Request, Response, build_response
from signaling.sip.overload import OverloadConfig, OverloadControl
from signaling.sip.routing import TransportAddress
from signaling.sip.timers import TimerSettings
from signaling.transport.application import SipRouter
from signaling.transport.hub import SipTransportHub
from signaling.transport.websocket import sip_websocket_handler
from storage import ports
from storage.postgres.accounts import PgAccountStore
from storage.postgres.calls import PgCallRepository
from storage.postgres.cdr import PgCdrRepository
from storage.postgres.connect import create_pool
from storage.redis.location import RedisLocationStore

log = get_logger("uc_edge.sip")

REDIS_MAX_CONNECTIONS = 32

_ALGORITHMS = {
    DigestAlgorithm.MD5: "MD5",
    DigestAlgorithm.SHA_256: "SHA-256",
    DigestAlgorithm.SHA_512_256: "SHA-512-256",
}


_CacheEntry = tuple[float, ports.SipCredentials | None, Mapping[DigestAlgorithm, str] | None]


class CredentialCache:
    """Credential lookups in DB_ACCOUNTS, cached briefly: a REGISTER or INVITE storm must not become a
    query storm (registrar, INVITE authentication and call routing all ask)."""

    def __init__(self, store: PgAccountStore, ttl_seconds: float, capacity: int = 100_000) -> None:
        self._store = store
        self._ttl = ttl_seconds
        self._capacity = capacity
        # (username, realm) -> (fetched at, credentials, HA1 per algorithm): the registrar's view is kept
        # with the credentials so a cached REGISTER does not rebuild it.
        self._entries: OrderedDict[tuple[str, str], _CacheEntry] = OrderedDict()

    async def lookup(self, username: str, realm: str) -> ports.SipCredentials | None:
        return (await self._entry(username, realm))[1]

    async def __call__(self, username: str, realm: str) -> Mapping[DigestAlgorithm, str] | None:
        """The registrar's ``CredentialLookup``: HA1 per algorithm."""
        return (await self._entry(username, realm))[2]

    def cached(self, username: str, realm: str) -> _CacheEntry | None:
        """The fresh cache entry for ``(username, realm)`` or ``None`` (no lookup)."""
        cached = self._entries.get((username, realm))
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached
        return None

    def known_absent(self, username: str, realm: str) -> bool:
        """True when a fresh entry says there is no such account (no lookup): call routing sends such a
        number to a catch-all trunk at once, without a task to await the cache."""
        cached = self.cached(username, realm)
        return cached is not None and cached[1] is None

    async def _entry(self, username: str, realm: str) -> _CacheEntry:
        key = (username, realm)
        now = time.monotonic()
        cached = self._entries.get(key)
        if cached is not None and now - cached[0] < self._ttl:
            return cached
        found = await self._store.lookup_credentials(username, realm)
        ha1s = None
        if found is not None:
            ha1s = {alg: ha1 for alg, name in _ALGORITHMS.items() if (ha1 := found.ha1(name))}
        entry = (now, found, ha1s)
        if self._ttl > 0:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return entry


class RegistrarCredentials:
    """The registrar's ``CredentialLookup`` over a :class:`CredentialCache`, safe to await outside an
    asyncio Task (see :class:`InlineRun`): a cache hit answers without suspending; a miss runs the
    database lookup in a Task of its own (asyncpg's connect and timeouts need a current task), shared
    by every REGISTER of that user waiting meanwhile, so a storm after a restart is one query per user."""

    def __init__(self, cache: CredentialCache) -> None:
        self._cache = cache
        self._fetching: dict[tuple[str, str], asyncio.Task[Mapping[DigestAlgorithm, str] | None]] = {}

    async def __call__(self, username: str, realm: str) -> Mapping[DigestAlgorithm, str] | None:
        entry = self._cache.cached(username, realm)
        if entry is not None:
            return entry[2]
        key = (username, realm)
        task = self._fetching.get(key)
        if task is None:
            task = asyncio.ensure_future(self._cache(username, realm))
            self._fetching[key] = task
            task.add_done_callback(lambda _task: self._fetching.pop(key, None))
        # shield: a waiter that goes away must not cancel the lookup the others share
        return await asyncio.shield(task)


class InlineRun:
    """Drives one coroutine to its end without an asyncio Task: the first step runs now, each later one
    from the done callback of the future it awaits. A REGISTER with credentials then costs no Task (its
    creation, registration in ``asyncio.all_tasks``, a step, a wake-up and a done callback scheduled
    through the loop) and its Redis command leaves in the loop turn its datagram arrived in.

    Only for coroutines that await plain futures and nothing that needs ``asyncio.current_task()``
    (``asyncio.timeout``, ``wait_for`` on 3.12, redis-py's and asyncpg's I/O): here the registrar over
    the pipelined location store (:class:`~storage.redis.location.PipelinedScripts`, whose connection
    setup runs in its own task) and :class:`RegistrarCredentials`. ``finish(result, None)`` or
    ``finish(None, error)`` is called exactly once, unless :meth:`close` came first."""

    __slots__ = ("_coroutine", "_finish", "_live")

    def __init__(
        self,
        coroutine: Coroutine[Any, Any, Any],
        finish: Callable[[Any, BaseException | None], None],
        live: set[InlineRun],
    ) -> None:
        self._coroutine = coroutine
        self._finish: Callable[[Any, BaseException | None], None] | None = finish
        self._live = live
        live.add(self)
        self._step(None)

    def _step(self, _awaited: object) -> None:
        finish = self._finish
        if finish is None:  # closed meanwhile
            return
        try:
            awaited = self._coroutine.send(None)
        except StopIteration as stop:
            self._done()
            finish(stop.value, None)
            return
        except (Exception, asyncio.CancelledError) as error:
            self._done()
            finish(None, error)
            return
        if awaited is None:  # a bare yield (asyncio.sleep(0)): go on in the next loop turn
            asyncio.get_running_loop().call_soon(self._step, None)
        elif getattr(awaited, "_asyncio_future_blocking", None):  # an asyncio future, as a Task sees it
            awaited._asyncio_future_blocking = False
            awaited.add_done_callback(self._step)
        else:
            self._coroutine.close()
            self._done()
            finish(None, RuntimeError(f"InlineRun cannot await {awaited!r}"))

    def _done(self) -> None:
        self._finish = None
        self._live.discard(self)

    def close(self) -> None:
        """Stop without finishing (shutdown): the coroutine gets GeneratorExit at its await."""
        if self._finish is not None:
            self._done()
            self._coroutine.close()


class GuardedHub(SipTransportHub):
    """The hub with flood protection in front of the parser: a banned source costs one dict lookup."""

    def __init__(self, endpoint: SipEndpoint, flood: FloodGuard, **kwargs: Any) -> None:
        super().__init__(endpoint, **kwargs)
        self.flood = flood
        self.rejected_sources: set[tuple[str, int]] = set()

    def receive(self, data: bytes, source: TransportAddress) -> None:
        verdict = self.flood.check_request(source.host, self.now())
        if verdict is Verdict.DROP:
            return
        if verdict is Verdict.REJECT_503:
            # Let the message reach the endpoint so the 503 goes through a transaction (retransmissions
            # of the request are absorbed), then the application answers 503.
            self.rejected_sources.add((source.host, source.port))
        super().receive(data, source)


def _ports_address(source: TransportAddress) -> ports.TransportAddress:
    return ports.TransportAddress(source.transport, source.host, source.port, source.connection_id)


# Sources whose storage-side address is remembered (cleared when full): a phone registers from the same
# address every time, and a frozen, validated dataclass costs more to build than the lookup.
_SOURCE_CACHE_SIZE = 4096


def call_control_config(settings: Settings) -> CallControlConfig:
    """Call-control behaviour from settings."""
    s = settings
    domains = {s.sip_domain, s.sip_host} | ({s.advertised_address} if s.advertised_address else set())
    echo = s.call_echo_numbers
    return CallControlConfig(
        domain=s.sip_domain,
        realm=s.sip_realm,
        local_domains=frozenset(d.lower() for d in domains - {"0.0.0.0", "::"}),
        echo_numbers=frozenset(n.strip() for n in echo.split(",") if n.strip()),
        no_answer_timeout=s.call_no_answer_seconds,
        trunks=parse_trunks(s.sip_trunks),
        require_auth=s.call_require_auth,
    )


def overload_control(settings: Settings) -> OverloadControl | None:
    s = settings
    if not s.overload_control:
        return None
    return OverloadControl(
        OverloadConfig(
            target_delay=s.overload_target_delay_ms / 1000,
            limit_delay=s.overload_limit_delay_ms / 1000,
            retry_after=s.overload_retry_after_seconds or None,
            remember_refused=64 * s.sip_t1_ms / 1000,
        )
    )


class SipNode:
    def __init__(
        self,
        settings: Settings,
        *,
        media: MediaControl | None = None,
        call_control: CallControlConfig | None = None,
    ) -> None:
        self.settings = settings
        self.media = media
        self.call_control_config = call_control or call_control_config(settings)
        self.call_control: CallControlService | None = None
        self.trunk_registrations: TrunkRegistrations | None = None
        self.trunk_dns: TrunkDns | None = None
        self._owned_media: Any = None
        self._calls_pool: Any = None
        self._cdr_pool: Any = None
        s = settings
        t1 = s.sip_t1_ms / 1000
        self.endpoint = SipEndpoint(
            timers=TimerSettings(t1=t1),
            limits=ParseLimits(max_message_size=s.sip_max_message_bytes),
            # Completed transactions linger 32 s (Timer J) but keep only their response bytes: 250k of them
            # cover ~3,900 REGISTER/s sustained before the endpoint answers 503.
            max_transactions=250_000,
            overload=overload_control(s),
        )
        self.flood = FloodGuard(
            FloodConfig(
                window=s.flood_window_seconds,
                max_requests=s.flood_requests_per_window,
                ban_time=s.flood_ban_seconds,
                policy=BanPolicy.REJECT_503 if s.flood_ban_action == "503" else BanPolicy.DROP,
                exempt_sources=s.flood_exempt,
                auth_window=s.auth_failure_window_seconds,
                max_auth_failures_per_user=s.auth_failures_per_window,
            )
        )
        secret = (s.digest_secret or os.urandom(32).hex()).encode()
        algorithms = [DigestAlgorithm(name) for name in s.sip_digest_algorithms.split(",")]
        self.authenticator = DigestAuthenticator(s.sip_realm, secret, algorithms=algorithms)
        self.router = SipRouter()
        self.hub = GuardedHub(
            self.endpoint, self.flood, application=self.router, max_stream_message=s.sip_max_message_bytes
        )
        self.registrar: Registrar | None = None
        # REGISTERs with credentials in flight as InlineRun (when the registrar's ports allow it)
        self._inline_registers = False
        self._register_runs: set[InlineRun] = set()
        self._source_addresses: dict[tuple[str, str, int, str | None], ports.TransportAddress] = {}
        self._tag_secret = os.urandom(32)  # keys the To tags of stateless answers (_stateless_to_tag)
        self._location: RedisLocationStore | None = None
        self.registrar_stats = {"registrations": 0, "rejections": 0, "overloaded": 0}
        self._redis: aioredis.Redis | None = None
        self._pg_pool: Any = None
        self._collector: StatsCollector | None = None
        self.websocket_handler = sip_websocket_handler(self.hub)

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        # A blocking pool: under a REGISTER burst, requests wait (up to 5 s) for one of a bounded set of
        # connections. redis-py's default pool raises MaxConnectionsError at its 101st concurrent command,
        # which turned a few hundred REGISTERs/s into 500 answers.
        self._redis = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(
                s.redis_url, max_connections=REDIS_MAX_CONNECTIONS, timeout=5
            )
        )
        # min_size=0: no connection at start, so the node comes up (and /readyz says why it is not ready)
        # while PostgreSQL is still down; lookups connect when the first REGISTER needs one.
        self._pg_pool = await create_pool(s.database_dsn(s.db_accounts), min_size=0, max_size=s.db_pool_max)
        accounts = PgAccountStore(self._pg_pool)
        credentials = CredentialCache(accounts, s.credential_cache_seconds)
        # The REGISTER hot path runs its scripts over one pipelined connection of its own (redis-py costs
        # ~100-150 µs of CPU per command); everything else keeps using the pool.
        location = self._location = RedisLocationStore(self._redis, pipelined=True)
        self.install_registrar(location, credentials)
        await self.hub.start(
            s.sip_host,
            s.sip_udp_port,
            s.sip_tcp_port,
            s.sip_tls_port if s.tls_enabled else None,
            str(s.tls_cert) if s.tls_cert else None,
            str(s.tls_key) if s.tls_key else None,
            advertised_host=s.advertised_address,
        )
        await self._start_call_control(accounts, credentials, location)
        self._collector = StatsCollector(
            {
                "endpoint": lambda: {
                    **self.endpoint.stats.as_dict(),
                    "active_transactions": self.endpoint.active_transactions,
                },
                "overload": self._overload_snapshot,
                "flood": lambda: {**vars_of(self.flood.stats), "tracked": self.flood.tracked},
                "digest": lambda: vars_of(self.authenticator.stats),
                "registrar": lambda: self.registrar_stats,
                "callcontrol": lambda: self.call_control.stats_snapshot() if self.call_control else {},
            },
            SIP_METRICS,
        )
        REGISTRY.register(self._collector)

    def _overload_snapshot(self) -> dict[str, float]:
        control = self.endpoint.overload
        if control is None:
            return {}
        now = self.hub.now()
        return {
            "queue_delay": control.delay(now),
            "refused_share": control.refusal_share(now),
            "probes_lost": control.probes_lost,
        }

    def install_registrar(self, location: RedisLocationStore, credentials: CredentialCache) -> None:
        """The registrar over ``location`` and ``credentials``, routed for REGISTER and OPTIONS, and the
        stateless 401 responder (``start`` calls this; ``bench/suites/register_cost.py`` too, with its
        own store connection)."""
        s = self.settings
        domains = {s.sip_domain, s.sip_host}
        if s.advertised_address:
            domains.add(s.advertised_address)
        # Over the pipelined store every await of a REGISTER is a plain future (see InlineRun);
        # redis-py's own commands need a Task.
        self._inline_registers = location.pipelined
        self.registrar = Registrar(
            location,
            RegistrarConfig(
                realm=s.sip_realm,
                domains=frozenset(domains - {"0.0.0.0", "::"}),
                default_expires=s.registrar_default_expires,
                min_expires=s.registrar_min_expires,
                max_expires=s.registrar_max_expires,
            ),
            authenticator=self.authenticator,
            credentials=RegistrarCredentials(credentials),
            flood=self.flood,
            node_id=s.node_id,
        )
        self.router.route("REGISTER", self._on_register)
        self.router.route("OPTIONS", self._on_options)
        self.endpoint.stateless_responder = self._challenge_statelessly

    async def _start_call_control(
        self, accounts: PgAccountStore, credentials: CredentialCache, location: RedisLocationStore
    ) -> None:
        """The B2BUA on INVITE & co., media through the MediaControl port (the real plane by default)."""
        s = self.settings
        if self.media is None:
            from media.plane import MediaPlane

            self._owned_media = MediaPlane(
                rtp_port_min=s.rtp_port_min,
                rtp_port_max=s.rtp_port_max,
                bind_address=s.sip_host,
                advertised_address=s.advertised_address,
                media_timeout=s.media_timeout_seconds,
                rtp_socket_pool=s.rtp_socket_pool,
                registry=REGISTRY,
            )
            await self._owned_media.start()
            self.media = self._owned_media
        self._calls_pool = await create_pool(s.database_dsn(s.db_calls), min_size=0, max_size=s.db_pool_max)
        self._cdr_pool = await create_pool(s.database_dsn(s.db_cdr), min_size=0, max_size=s.db_pool_max)
        config = self.call_control_config
        # Trunk host names resolved before the first call can need them; routing and inbound source
        # checks read config.trunk_addresses, which this keeps fresh until the node stops.
        udp_family = None
        if self.hub.udp_address is not None:
            udp_family = socket.AF_INET6 if ":" in self.hub.udp_address[0] else socket.AF_INET
        self.trunk_dns = TrunkDns(
            config.trunks,
            config.trunk_addresses,
            refresh_interval=s.sip_trunk_dns_refresh_seconds,
            families={"udp": udp_family} if udp_family is not None else None,
            registry=REGISTRY,
        )
        await self.trunk_dns.start()
        local = {
            name: LocalAddress(name.upper(), host, port)
            for name, (host, port) in self.endpoint.local_addresses.items()
        }
        env = CallControlService.environment(
            CallEnvironment(config, local, timers=self.endpoint.timers),
            self.hub.now,
        )
        assert self.media is not None
        self.call_control = CallControlService(
            hub=self.hub,
            media=self.media,
            calls=PgCallRepository(self._calls_pool, node_id=s.node_id),
            cdrs=PgCdrRepository(self._cdr_pool, node_id=s.node_id),
            router=CallRouter(
                config,
                location=location,
                credentials=credentials.lookup,
                known_absent=credentials.known_absent,
                rules=accounts,
            ),
            env=env,
            authenticator=self.authenticator,
            credentials=credentials.lookup,
            flood=self.flood,
        )
        self.call_control.install(self.router)
        await self.call_control.start()
        # Outbound registration to trunks that ask for it: our Contact is the hub's listening address,
        # so this comes after the transports are up.
        self.trunk_registrations = TrunkRegistrations(
            self.hub, config.trunks, registry=REGISTRY, addresses=config.trunk_addresses
        )
        await self.trunk_registrations.start()

    async def stop(self) -> None:
        # Unregister from trunks first, while the transports can still carry the REGISTER (Expires: 0).
        if self.trunk_registrations is not None:
            await self.trunk_registrations.stop()
        if self.call_control is not None:
            await self.call_control.stop()
        if self.trunk_dns is not None:
            await self.trunk_dns.stop()
        await self.hub.stop()
        for run in list(self._register_runs):
            run.close()
        if self._owned_media is not None:
            await self._owned_media.close()
        for pool in (self._calls_pool, self._cdr_pool):
            if pool is not None:
                await pool.close()
        if self._collector is not None:
            REGISTRY.unregister(self._collector)
            self._collector = None
        if self._location is not None:
            await self._location.aclose()
        if self._redis is not None:
            await self._redis.aclose()
        if self._pg_pool is not None:
            await self._pg_pool.close()

    # --- application ----------------------------------------------------------------------------------

    def _rejected(self, event: RequestReceived) -> bool:
        key = (event.source.host, event.source.port)
        if key not in self.hub.rejected_sources:
            return False
        self.hub.rejected_sources.discard(key)
        if event.transaction is not None:
            self.hub.respond(
                event.transaction, build_response(event.request, 503, headers=[("Retry-After", "60")])
            )
        return True

    def _on_options(self, event: RequestReceived, hub: SipTransportHub) -> None:
        if self._rejected(event) or event.transaction is None:
            return
        response = build_response(
            event.request,
            200,
            headers=[
                ("Allow", self.router.allow),
                ("Accept", "application/sdp"),
                ("Supported", "path, outbound"),
            ],
        )
        hub.respond(event.transaction, response)

    def _challenge_statelessly(self, request: Request, source: TransportAddress) -> Response | None:
        """The endpoint's stateless responder (RFC 3261 §8.2.7, Kamailio's sl_send_reply): a REGISTER
        without credentials gets its 401 challenge (or its refusal) without a server transaction, so
        nothing lingers 32 s for Timer J and a retransmission is simply challenged again. Anything else,
        and a source being answered 503 by the flood guard, goes through :meth:`_on_register`."""
        registrar = self.registrar
        if request.method != "REGISTER" or registrar is None or request.headers.getlist("Authorization"):
            return None  # credentials (or none expected): the registrar needs the store, statefully
        if (source.host, source.port) in self.hub.rejected_sources:
            return None
        try:
            result = registrar.answer_unauthenticated(
                request,
                source=self._source_address(source),
                now=time.time(),
                to_tag=self._stateless_to_tag(request),
            )
        except Exception:
            log.exception("stateless REGISTER answer failed", source=source.host)
            return None
        if result is None:
            return None
        self._count_register_answer(result, source.host)
        return result.response

    def _stateless_to_tag(self, request: Request) -> str:
        """§8.2.7: a stateless UAS gives the same request the same To tag. Keyed (BLAKE2b as a MAC), so
        the tag stays unguessable, like the random tags of stateful answers."""
        headers = request.headers
        identity = "\x00".join(
            (
                headers.get("Via") or "",
                headers.get("Call-ID") or "",
                headers.get("From") or "",
                headers.get("CSeq") or "",
            )
        )
        data = identity.encode("utf-8", "surrogateescape")
        return hashlib.blake2b(data, key=self._tag_secret, digest_size=8).hexdigest()

    def _count_register_answer(self, result: RegisterResult, source_host: str) -> None:
        stats = self.registrar_stats
        code = result.response.code
        if code == 200:
            stats["registrations"] += 1
        elif code != 401:
            stats["rejections"] += 1
            if code == 503:
                stats["overloaded"] += 1
            else:
                log.info(
                    "register refused", aor=result.aor, status=code, reason=result.reason, source=source_host
                )

    def _source_address(self, source: TransportAddress) -> ports.TransportAddress:
        key = (source.transport, source.host, source.port, source.connection_id)
        address = self._source_addresses.get(key)
        if address is None:
            address = _ports_address(source)
            if len(self._source_addresses) >= _SOURCE_CACHE_SIZE:
                self._source_addresses.clear()
            self._source_addresses[key] = address
        return address

    def _on_register(self, event: RequestReceived, hub: SipTransportHub) -> Coroutine[Any, Any, None] | None:
        """A REGISTER without credentials (the 401 challenge) is answered here and now, without a task,
        the store or the credential database; one with credentials runs as an :class:`InlineRun` over
        the pipelined store (else a task), or gets a 503 at once when the registrar's backlog is full
        (queueing would only end in store timeouts)."""
        registrar = self.registrar
        if self._rejected(event) or event.transaction is None or registrar is None:
            return None
        transaction, request = event.transaction, event.request
        source = self._source_address(event.source)
        now = time.time()

        early = registrar.answer_unauthenticated(request, source=source, now=now)
        if early is None and registrar.overloaded:
            early = registrar.overload_answer(request)
        if early is not None:
            hub.respond(transaction, early.response)
            self._count_register_answer(early, event.source.host)
            return None

        def finish(result: RegisterResult | None, error: BaseException | None) -> None:
            try:
                if result is None:
                    # Redis or PostgreSQL went away: the UA gets a 500 with Retry-After, never silence
                    # (answered before logging, which can fail too).
                    self.registrar_stats["rejections"] += 1
                    hub.respond(transaction, build_response(request, 500, headers=[("Retry-After", "5")]))
                    log.error("register failed", source=event.source.host, exc_info=error)
                    return
                hub.respond(transaction, result.response)
                self._count_register_answer(result, event.source.host)
            except Exception:  # e.g. the transaction is gone (shutdown): count it like the hub does
                hub.stats.application_errors += 1
                log.exception("register answer failed", source=event.source.host)

        work = registrar.handle_register(request, source=source, now=now)
        if self._inline_registers:
            InlineRun(work, finish, self._register_runs)
            return None

        async def in_task() -> None:
            try:
                result = await work
            except Exception as error:
                finish(None, error)
                return
            finish(result, None)

        return in_task()

    # --- where we listen ------------------------------------------------------------------------------

    def endpoints(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for name, address in (
            ("udp", self.hub.udp_address),
            ("tcp", self.hub.tcp_address),
            ("tls", self.hub.tls_address),
        ):
            if address is not None:
                scheme = "sips" if name == "tls" else "sip"
                found[f"sip-{name}"] = f"{scheme}:{address[0]}:{address[1]};transport={name}"
        return found


def vars_of(stats: Any) -> dict[str, float]:
    if hasattr(stats, "as_dict"):
        return dict(stats.as_dict())
    if hasattr(stats, "__dataclass_fields__"):
        return {name: getattr(stats, name) for name in stats.__dataclass_fields__}
    return dict(vars(stats))


async def start_sip(
    settings: Settings, *, media: MediaControl | None = None, call_control: CallControlConfig | None = None
) -> SipNode:
    node = SipNode(settings, media=media, call_control=call_control)
    try:
        await node.start()
    except BaseException:
        await node.stop()
        raise
    return node
