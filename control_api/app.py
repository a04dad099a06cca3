"""The aiohttp application: health, readiness, Prometheus metrics, node info, and SIP over WebSocket.

Errors are JSON with a reason (``{"error": "...", "status": 404}``) so an operator's script never has to
parse HTML. The SIP WebSocket handler (RFC 7118) is supplied by the composition root and mounted at
``/sip``; the app knows nothing about SIP.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from edge.health import Check

ReadinessProbe = Callable[[], Awaitable[list[Check]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

READINESS_CACHE_SECONDS = 2.0

SETTINGS_KEY: web.AppKey[Any] = web.AppKey("settings", object)
STARTED_KEY: web.AppKey[float] = web.AppKey("started", float)


def _json_error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason, "status": status}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        if exc.status == 404:
            reason = f"no such endpoint: {request.method} {request.path}"
        elif exc.status == 405:
            allowed = exc.headers.get("Allow", "")
            reason = f"method {request.method} not allowed on {request.path} (allowed: {allowed})"
        response = _json_error(exc.status, reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response


class Readiness:
    """Runs the dependency checks at most every ``READINESS_CACHE_SECONDS`` however often /readyz is hit."""

    def __init__(self, probe: ReadinessProbe, clock: Callable[[], float] = time.monotonic) -> None:
        self._probe = probe
        self._clock = clock
        self._cached: tuple[float, list[Check]] | None = None

    async def checks(self) -> list[Check]:
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < READINESS_CACHE_SECONDS:
            return self._cached[1]
        results = await self._probe()
        self._cached = (self._clock(), results)
        return results


def create_app(
    settings: Any,
    *,
    readiness: ReadinessProbe,
    sip_websocket: Handler | None = None,
    registry: CollectorRegistry = REGISTRY,
    info: Callable[[], dict[str, Any]] | None = None,
) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=1024 * 1024)
    app[SETTINGS_KEY] = settings
    app[STARTED_KEY] = time.monotonic()
    ready = Readiness(readiness)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "node_id": settings.node_id,
                "uptime_seconds": round(time.monotonic() - app[STARTED_KEY], 3),
            }
        )

    async def readyz(request: web.Request) -> web.Response:
        checks = await ready.checks()
        ok = all(c.ok for c in checks)
        body = {
            "ready": ok,
            "checks": {
                c.name: {k: v for k, v in asdict(c).items() if k not in ("name", "extra")} for c in checks
            },
        }
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    async def node_info(request: web.Request) -> web.Response:
        return web.json_response(info() if info else {"node_id": settings.node_id})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/node", node_info)
    if sip_websocket is not None:
        app.router.add_get("/sip", sip_websocket)
    return app
