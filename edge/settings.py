"""Settings: environment variables (prefix ``UC_EDGE_``) over an optional TOML file over defaults.

Defaults point at the local stack that ``scripts/services up`` starts on loopback. A wrong value stops
start-up with one line naming the setting as the operator would type it (``UC_EDGE_SIP_UDP_PORT``) and
what is wrong with it: see :func:`load_settings` and :class:`SettingsError`.
"""

from __future__ import annotations

import os
import socket
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "UC_EDGE_"
CONFIG_ENV = "UC_EDGE_CONFIG"

Port = int

# The config file of the load in progress (explicit argument beats UC_EDGE_CONFIG); a context variable so
# loading settings never mutates the process environment.
_config_file_in_use: ContextVar[str | None] = ContextVar("uc_edge_config_file", default=None)


class SettingsError(Exception):
    """A setting is wrong; the message is one line naming it and saying how to fix it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        frozen=True,
    )

    # --- identity -----------------------------------------------------------------------------------------
    node_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=64)

    # --- SIP ----------------------------------------------------------------------------------------------
    sip_host: str = "127.0.0.1"
    sip_udp_port: Port = Field(5060, ge=0, le=65535)
    sip_tcp_port: Port = Field(5060, ge=0, le=65535)
    sip_tls_port: Port = Field(5061, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The address peers must use to reach this node (Via/Contact/SDP) when it differs from sip_host:
    # behind NAT, in a container, or when listening on 0.0.0.0. None = sip_host.
    advertised_address: str | None = None
    sip_domain: str = "uc-edge.local"
    sip_realm: str = "uc-edge"
    # Signs digest nonces. Every node of a cluster needs the same value so that any node accepts a nonce
    # another issued; None = a random secret per process (fine for one node).
    digest_secret: str | None = Field(None, min_length=16)
    # Digest algorithms offered, one challenge header each, in this order (RFC 8760: strongest first).
    # UAs that read only the first challenge (SIPp 3.6 among them) need MD5 first or alone.
    sip_digest_algorithms: str = "MD5"
    # Seconds a credential lookup is cached in the process (password changes apply within this time).
    credential_cache_seconds: float = Field(30.0, ge=0)
    sip_max_message_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024)
    sip_t1_ms: int = Field(500, ge=50, le=10_000)
    # Flood protection (pike-like): requests per source IP within the window, ban time.
    flood_requests_per_window: int = Field(400, ge=1)
    flood_window_seconds: float = Field(2.0, gt=0)
    flood_ban_seconds: float = Field(60.0, ge=0)
    flood_ban_action: Literal["drop", "503"] = "drop"
    # Comma-separated source addresses never rate-limited: a Kamailio front, trunks, load generators.
    flood_exempt_sources: str = ""
    # Overload control (signaling/sip/overload.py): while a SIP message waits longer than the target to be
    # read, a growing share of new calls is answered 503; from the limit on, every new call. The limit
    # stays below T1 (500 ms) so that admitted calls are not retransmitted into a storm. Both are low: a
    # queue that stands costs CPU per call (README design notes: at 500 calls/s offered to a core good
    # for ~450, 100/400 ms carried 422/s with setup p50 328 ms, 15/150 ms carried 483/s, p50 16 ms).
    overload_control: bool = True
    overload_target_delay_ms: int = Field(15, ge=1, le=60_000)
    overload_limit_delay_ms: int = Field(150, ge=2, le=60_000)
    # Retry-After on those 503s; 0 sends none. An upstream proxy stops sending us ANY request for that
    # long (RFC 3261 §21.5.4), which turns the shedding of a share into on/off (RFC 7339 §1): off by default.
    overload_retry_after_seconds: int = Field(0, ge=0, le=3600)
    auth_failures_per_window: int = Field(10, ge=1)
    auth_failure_window_seconds: float = Field(60.0, gt=0)
    registrar_min_expires: int = Field(60, ge=1)
    registrar_max_expires: int = Field(3600, ge=1)
    registrar_default_expires: int = Field(3600, ge=1)

    # --- HTTP (control API, health, metrics, SIP over WebSocket at /sip) -----------------------------------
    http_host: str = "127.0.0.1"
    http_port: Port = Field(8080, ge=0, le=65535)

    # --- call control ---------------------------------------------------------------------------------
    # Numbers answered by the built-in echo test (comma-separated).
    call_echo_numbers: str = "echo,9196"
    # Ringing longer than this is CANCELed and the caller gets 480.
    call_no_answer_seconds: float = Field(60.0, ge=1, le=3600)
    # INVITEs from users must carry digest credentials (407 challenge); trunks are trusted by source IP.
    call_require_auth: bool = True
    # Static trunks: a JSON list in UC_EDGE_SIP_TRUNKS or [[sip_trunks]] tables in the TOML file, each
    # {name, host, port, transport, username, password, prefixes, inbound_sources, strip_prefix}.
    sip_trunks: list[dict[str, Any]] = Field(default_factory=list)
    # Trunk hosts given by DNS name are resolved (A/AAAA) at start and again this often; a failed
    # refresh keeps the last good addresses.
    sip_trunk_dns_refresh_seconds: float = Field(60.0, ge=1, le=86400)

    # --- media --------------------------------------------------------------------------------------------
    rtp_port_min: Port = Field(20000, ge=1024, le=65535)
    rtp_port_max: Port = Field(29999, ge=1024, le=65535)
    # No RTP for this long (while not on hold) ends the call with "media timeout".
    media_timeout_seconds: float = Field(30.0, ge=1, le=3600)
    # RTP/RTCP port pairs bound at start and reused across calls: call setup skips two socket binds. Two
    # per relayed call (media.plane.DEFAULT_SOCKET_POOL says why 1,024).
    rtp_socket_pool: int = Field(1024, ge=0, le=10000)

    # --- PostgreSQL: one server, one database per domain ---------------------------------------------------
    db_dsn: str = "postgresql://uc_edge:uc_edge@127.0.0.1:5432/postgres"
    db_accounts: str = "uc_accounts"
    db_calls: str = "uc_calls"
    db_cdr: str = "uc_cdr"
    db_conferences: str = "uc_conferences"
    # Where the versioned SQL migrations live; None = the ones shipped in storage/postgres/migrations.
    migrations_dir: Path | None = None
    db_pool_min: int = Field(1, ge=0)
    db_pool_max: int = Field(10, ge=1)
    # Where PostgreSQL runs without autovacuum, how often the node looks for tables whose statistics are
    # stale by autovacuum's rule and analyzes them (storage/postgres/upkeep.py); unused with autovacuum on.
    db_statistics_check_seconds: float = Field(10.0, gt=0)

    # --- Redis --------------------------------------------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6379/0"
    idempotency_ttl_hours: int = Field(48, ge=24, le=72)

    # --- Kafka --------------------------------------------------------------------------------------------
    kafka_bootstrap: str = "127.0.0.1:9092"
    # Real Kafka supports the idempotent producer; the local Tansu broker rejects it (see README).
    kafka_idempotence: bool = False
    kafka_partitions: int = Field(3, ge=1, le=1024)
    # How long the outbox keeps rows Kafka has acknowledged (history for looking into a publication;
    # Kafka holds the events): 0 deletes them on acknowledgement; more marks them sent and the relay
    # purges them in bounded chunks once they are this old.
    outbox_sent_retention_seconds: float = Field(0.0, ge=0)

    # --- S3 -----------------------------------------------------------------------------------------------
    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_region: str = "us-east-1"
    s3_access_key: str = "devkey"
    s3_secret_key: str = "devsecret"
    s3_bucket: str = "recordings"

    # --- logs ---------------------------------------------------------------------------------------------
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("db_dsn")
    @classmethod
    def _dsn_is_postgres(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis:// URL")
        return value

    @field_validator("s3_endpoint")
    @classmethod
    def _s3_endpoint(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError("must be host:port[,host:port…]")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together (or neither)")
        for path_name in ("tls_cert", "tls_key"):
            path = getattr(self, path_name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{path_name}: file {path} does not exist")
        if self.rtp_port_min >= self.rtp_port_max:
            raise ValueError("rtp_port_min must be below rtp_port_max")
        if not self.registrar_min_expires <= self.registrar_default_expires <= self.registrar_max_expires:
            raise ValueError("registrar expiries must satisfy min <= default <= max")
        if self.overload_target_delay_ms >= self.overload_limit_delay_ms:
            raise ValueError("overload_target_delay_ms must be below overload_limit_delay_ms")
        return self

    @field_validator("sip_trunks")
    @classmethod
    def _trunks(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from signaling.callcontrol.config import parse_trunks

        parse_trunks(value)  # raises ValueError naming the trunk and the problem
        return value

    @field_validator("sip_digest_algorithms")
    @classmethod
    def _algorithms(cls, value: str) -> str:
        names = [part.strip().upper() for part in value.split(",") if part.strip()]
        unknown = [n for n in names if n not in ("MD5", "SHA-256", "SHA-512-256")]
        if not names or unknown:
            raise ValueError("must list MD5, SHA-256 and/or SHA-512-256, comma-separated")
        return ",".join(names)

    @property
    def flood_exempt(self) -> frozenset[str]:
        return frozenset(part.strip() for part in self.flood_exempt_sources.split(",") if part.strip())

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    def database_dsn(self, database: str) -> str:
        """The DSN of one domain database on the configured server."""
        base, _, _old_db = self.db_dsn.rpartition("/")
        query = ""
        if "?" in _old_db:
            query = "?" + _old_db.split("?", 1)[1]
        return f"{base}/{database}{query}"

    @property
    def domain_databases(self) -> dict[str, str]:
        return {
            "accounts": self.db_accounts,
            "calls": self.db_calls,
            "cdr": self.db_cdr,
            "conferences": self.db_conferences,
        }

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file_in_use.get() or os.environ.get(CONFIG_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def _setting_label(loc: tuple[int | str, ...]) -> str:
    if not loc:
        return "settings"
    return ENV_PREFIX + str(loc[0]).upper()


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    label = _setting_label(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    given = first.get("input")
    if first.get("type") == "extra_forbidden":
        return f"unknown setting {label} — remove it or check its spelling (see README, Configuration)"
    if label == "settings":
        return f"invalid settings: {message}"
    if isinstance(given, str | int | float | bool):
        return f"invalid setting {label}={given!r}: {message}"
    return f"invalid setting {label}: {message}"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build validated settings or raise :class:`SettingsError` with one clear line."""
    path = str(config_file) if config_file is not None else os.environ.get(CONFIG_ENV)
    if path:
        try:
            with open(path, "rb") as handle:
                tomllib.load(handle)
        except FileNotFoundError:
            raise SettingsError(f"config file {path} ({CONFIG_ENV}) does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    token = _config_file_in_use.set(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    finally:
        _config_file_in_use.reset(token)
