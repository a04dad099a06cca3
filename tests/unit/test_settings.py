"""Settings: env over TOML over defaults; every wrong value is one line naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("UC_EDGE_"):
            monkeypatch.delenv(key)


def test_defaults_point_at_the_local_stack() -> None:
    s = load_settings()
    assert (s.sip_host, s.sip_udp_port, s.sip_tcp_port, s.sip_tls_port) == ("127.0.0.1", 5060, 5060, 5061)
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8080)
    assert not s.tls_enabled
    assert s.domain_databases == {
        "accounts": "uc_accounts",
        "calls": "uc_calls",
        "cdr": "uc_cdr",
        "conferences": "uc_conferences",
    }
    assert s.database_dsn("uc_calls") == "postgresql://uc_edge:uc_edge@127.0.0.1:5432/uc_calls"


def test_database_dsn_keeps_query_parameters() -> None:
    s = load_settings(db_dsn="postgresql://u:p@db:5433/postgres?sslmode=require")
    assert s.database_dsn("uc_cdr") == "postgresql://u:p@db:5433/uc_cdr?sslmode=require"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UC_EDGE_SIP_UDP_PORT", "5070")
    monkeypatch.setenv("UC_EDGE_KAFKA_IDEMPOTENCE", "true")
    monkeypatch.setenv("UC_EDGE_LOG_LEVEL", "debug")
    s = load_settings()
    assert s.sip_udp_port == 5070
    assert s.kafka_idempotence is True
    assert s.log_level == "DEBUG"


def test_toml_file_under_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "uc-edge.toml"
    config.write_text('sip_udp_port = 5999\nhttp_port = 9000\nsip_realm = "example.org"\n')
    monkeypatch.setenv("UC_EDGE_HTTP_PORT", "9100")
    s = load_settings(config)
    assert s.sip_udp_port == 5999  # from the file
    assert s.http_port == 9100  # the environment wins over the file
    assert s.sip_realm == "example.org"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "UC_EDGE_SIP_UDP_PORT",
            "abc",
            "invalid setting UC_EDGE_SIP_UDP_PORT='abc': Input should be a valid integer",
        ),
        ("UC_EDGE_HTTP_PORT", "70000", "invalid setting UC_EDGE_HTTP_PORT='70000'"),
        ("UC_EDGE_DB_DSN", "mysql://x/y", "UC_EDGE_DB_DSN='mysql://x/y': must be a postgresql:// URL"),
        ("UC_EDGE_REDIS_URL", "localhost", "UC_EDGE_REDIS_URL='localhost': must be a redis:// URL"),
        ("UC_EDGE_KAFKA_BOOTSTRAP", "nohost", "UC_EDGE_KAFKA_BOOTSTRAP='nohost': must be host:port"),
        ("UC_EDGE_IDEMPOTENCY_TTL_HOURS", "5", "UC_EDGE_IDEMPOTENCY_TTL_HOURS='5'"),
        ("UC_EDGE_LOG_FORMAT", "xml", "UC_EDGE_LOG_FORMAT='xml'"),
        ("UC_EDGE_TLS_CERT", "/nonexistent.pem", "tls_cert and tls_key must be set together"),
    ],
)
def test_wrong_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_missing_certificate_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "key.pem"
    key.write_text("x")
    monkeypatch.setenv("UC_EDGE_TLS_CERT", str(tmp_path / "missing.pem"))
    monkeypatch.setenv("UC_EDGE_TLS_KEY", str(key))
    with pytest.raises(SettingsError, match=r"tls_cert: file .*missing\.pem does not exist"):
        load_settings()


def test_inconsistent_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UC_EDGE_RTP_PORT_MIN", "30000")
    monkeypatch.setenv("UC_EDGE_RTP_PORT_MAX", "20000")
    with pytest.raises(SettingsError, match="rtp_port_min must be below rtp_port_max"):
        load_settings()


def test_unknown_key_in_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("sip_udp_prot = 5060\n")
    with pytest.raises(SettingsError, match="unknown setting UC_EDGE_SIP_UDP_PROT"):
        load_settings(config)


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("sip_udp_port = = 1\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(bad)
