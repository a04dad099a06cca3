"""The HTTP surface: health, readiness per dependency (against the real local stack), metrics, JSON errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter

from control_api.app import create_app
from edge.health import Check, check_dependencies
from edge.settings import Settings, load_settings


async def _client(settings: Settings, readiness, registry=None) -> TestClient:
    kwargs = {"registry": registry} if registry is not None else {}
    app = create_app(settings, readiness=readiness, **kwargs)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def live_client() -> AsyncIterator[TestClient]:
    settings = load_settings()

    async def readiness() -> list[Check]:
        return await check_dependencies(settings)

    client = await _client(settings, readiness)
    yield client
    await client.close()


async def test_healthz_answers_while_process_runs(live_client: TestClient) -> None:
    response = await live_client.get("/healthz")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ok"
    assert body["uptime_seconds"] >= 0


async def test_readyz_reports_each_real_dependency(live_client: TestClient) -> None:
    response = await live_client.get("/readyz")
    body = await response.json()
    assert set(body["checks"]) == {"postgres", "redis", "kafka", "s3"}
    for name in ("redis", "kafka", "s3"):
        assert body["checks"][name]["ok"], body["checks"][name]
    assert response.status == (200 if body["ready"] else 503)


async def test_readyz_is_503_and_says_how_to_fix_when_a_dependency_is_down() -> None:
    settings = load_settings(redis_url="redis://127.0.0.1:1/0")

    async def readiness() -> list[Check]:
        return await check_dependencies(settings)

    client = await _client(settings, readiness)
    try:
        response = await client.get("/readyz")
        assert response.status == 503
        body = await response.json()
        assert body["ready"] is False
        redis = body["checks"]["redis"]
        assert redis["ok"] is False
        assert "cannot reach Redis at 127.0.0.1:1" in redis["detail"]
        assert "UC_EDGE_REDIS_URL" in redis["fix"]
    finally:
        await client.close()


async def test_metrics_are_prometheus_text() -> None:
    registry = CollectorRegistry()
    counter = Counter("uc_test_events", "events seen", registry=registry)
    counter.inc(3)

    async def readiness() -> list[Check]:
        return []

    client = await _client(load_settings(), readiness, registry)
    try:
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.content_type == "text/plain"
        assert "uc_test_events_total 3.0" in await response.text()
    finally:
        await client.close()


async def test_errors_are_json_with_a_reason(live_client: TestClient) -> None:
    response = await live_client.get("/nope")
    assert response.status == 404
    assert await response.json() == {"error": "no such endpoint: GET /nope", "status": 404}
    response = await live_client.post("/healthz")
    assert response.status == 405
    body = await response.json()
    assert "method POST not allowed on /healthz" in body["error"]
