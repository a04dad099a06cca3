"""The deployment files stay in step with the code: every UC_EDGE_* they set is a real, valid setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from edge.settings import ENV_PREFIX, Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"


def _resolve(value: str) -> str:
    """Apply compose's ${NAME:-default} substitution with the defaults."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


def _uc_edge_environments() -> dict[str, dict[str, str]]:
    compose = yaml.safe_load(COMPOSE.read_text())
    found = {}
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        uc = {k: _resolve(v) for k, v in env.items() if k.startswith(ENV_PREFIX)}
        if uc and service.get("image", "").startswith("uc-edge"):
            found[name] = uc
    return found


def test_compose_runs_migrate_before_the_server() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    server = next(s for s in services.values() if s.get("command") == ["serve"])
    migrate_name = next(n for n, s in services.items() if s.get("command") == ["migrate"])
    assert server["depends_on"][migrate_name]["condition"] == "service_completed_successfully"
    for service in services.values():
        for dependency, rule in (service.get("depends_on") or {}).items():
            if isinstance(rule, dict) and rule.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"


def test_every_setting_in_compose_is_known_and_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    environments = _uc_edge_environments()
    assert environments, "no uc-edge service found in docker-compose.yml"
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    for service, env in environments.items():
        unknown = set(env) - fields
        assert not unknown, f"{service}: unknown settings {sorted(unknown)}"
        for key in list(__import__("os").environ):
            if key.startswith(ENV_PREFIX):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        try:
            settings = load_settings()
        except SettingsError as exc:  # pragma: no cover - the assertion message is the point
            pytest.fail(f"{service}: {exc}")
        assert settings.sip_host == "0.0.0.0" and settings.http_host == "0.0.0.0"
        assert settings.kafka_idempotence is True


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2, "multi-stage build expected"
    assert re.search(r"^USER\s+(?!root|0\b)\S+", text, re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text
