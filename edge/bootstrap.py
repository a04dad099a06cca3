"""Composition root: builds the node's components from settings and wires them. No I/O at import time.

Order of start: HTTP (health must answer while the rest comes up), then SIP listeners. Order of stop is
the reverse, so in-flight SIP transactions are not cut by a closed HTTP side.
"""

from __future__ import annotations

import asyncio
import random
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web

from control_api.app import create_app
from edge.health import check_dependencies
from edge.logs import get_logger
from edge.settings import Settings

log = get_logger("uc_edge.bootstrap")

KAFKA_TOPICS = ("call-events", "cdr-events", "conf-events")


def package_version() -> str:
    try:
        return version("uc-edge")
    except PackageNotFoundError:  # pragma: no cover - running from a tree without install
        return "0+unknown"


class EdgeNode:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.time()
        self._http_runner: web.AppRunner | None = None
        self._http_port: int | None = None
        self._sip: Any = None
        self._relay_task: asyncio.Task[None] | None = None
        self._statistics_task: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._start_sip()
        await self._start_http()
        self._relay_task = asyncio.create_task(self._supervise_outbox_relays(), name="outbox-relays")
        self._statistics_task = asyncio.create_task(self._keep_table_statistics(), name="table-statistics")

    async def stop(self) -> None:
        for task in (self._relay_task, self._statistics_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._relay_task = self._statistics_task = None
        if self._http_runner is not None:
            await self._http_runner.cleanup()
            self._http_runner = None
        if self._sip is not None:
            await self._sip.stop()
            self._sip = None

    # --- SIP ----------------------------------------------------------------------------------------------

    async def _start_sip(self) -> None:
        from edge.sip_node import start_sip

        self._sip = await start_sip(self.settings)

    # --- events: outbox → Kafka ---------------------------------------------------------------------------

    async def _supervise_outbox_relays(self) -> None:
        """Publish every domain's outbox to Kafka for as long as the node runs.

        The relays retry broker outages themselves; anything that still ends them (a database that is
        gone, a bug) is logged and the relays restart after a bounded, jittered delay: events wait in the
        outbox meanwhile, none is lost.
        """
        from storage.kafka.publisher import ProducerSettings
        from storage.kafka.relay import run_outbox_relays

        s = self.settings
        dsns = {domain: s.database_dsn(db) for domain, db in s.domain_databases.items()}
        producer = ProducerSettings(
            bootstrap_servers=s.kafka_bootstrap, enable_idempotence=s.kafka_idempotence
        )
        delay = 1.0
        while True:
            started = time.monotonic()
            try:
                await run_outbox_relays(
                    dsns, producer, relay_id=s.node_id, sent_retention_seconds=s.outbox_sent_retention_seconds
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("outbox relays stopped; restarting", error=str(exc), retry_in=round(delay, 1))
            if time.monotonic() - started > 60:
                delay = 1.0
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 30.0)

    async def _keep_table_statistics(self) -> None:
        """Where PostgreSQL runs without autovacuum, analyze the tables the node writes as they change
        (storage/postgres/upkeep.py: plans kept from statistics of empty tables scanned whole tables)."""
        from storage.postgres.upkeep import keep_table_statistics

        s = self.settings
        await keep_table_statistics(
            {domain: s.database_dsn(db) for domain, db in s.domain_databases.items()},
            check_interval_seconds=s.db_statistics_check_seconds,
        )

    # --- HTTP ---------------------------------------------------------------------------------------------

    async def _readiness(self) -> list[Any]:
        return await check_dependencies(self.settings, KAFKA_TOPICS)

    def info(self) -> dict[str, Any]:
        return {
            "node_id": self.settings.node_id,
            "version": package_version(),
            "started_at": self.started_at,
            "endpoints": self.endpoints(),
            "trunk_registrations": self.trunk_registrations(),
        }

    def trunk_registrations(self) -> list[dict[str, object]]:
        registrations = getattr(self._sip, "trunk_registrations", None)
        return registrations.snapshot() if registrations is not None else []

    async def _start_http(self) -> None:
        app = create_app(
            self.settings,
            readiness=self._readiness,
            sip_websocket=self._sip.websocket_handler if self._sip is not None else None,
            info=self.info,
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.http_host, self.settings.http_port, reuse_address=True)
        await site.start()
        self._http_runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self._http_port = sockets[0].getsockname()[1] if sockets else self.settings.http_port

    # --- where we listen ----------------------------------------------------------------------------------

    @property
    def http_port(self) -> int:
        return self._http_port if self._http_port is not None else self.settings.http_port

    def endpoints(self) -> dict[str, str]:
        s = self.settings
        http = f"http://{s.http_host}:{self.http_port}"
        found: dict[str, str] = {}
        if self._sip is not None:
            found.update(self._sip.endpoints())
        found["sip-ws"] = f"ws://{s.http_host}:{self.http_port}/sip"
        found["http"] = http
        found["health"] = f"{http}/healthz"
        found["ready"] = f"{http}/readyz"
        found["metrics"] = f"{http}/metrics"
        return found

    def endpoint_lines(self) -> list[str]:
        return [f"uc-edge {package_version()} node {self.settings.node_id} listening:"] + [
            f"  {name:<8} {where}" for name, where in self.endpoints().items()
        ]
