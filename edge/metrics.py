"""Prometheus export of the sans-IO cores' counters.

The cores count in plain integers (no prometheus import, no per-message cost beyond ``+= 1``); this
collector reads them at scrape time. Each exported metric is declared once here, with its help text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

StatsSource = Callable[[], Mapping[str, float]]


@dataclass(frozen=True)
class Exported:
    """One counter or gauge read from a stats source under ``key``."""

    source: str
    key: str
    name: str
    help: str
    kind: str = "counter"  # or "gauge"


class StatsCollector(Collector):
    def __init__(self, sources: Mapping[str, StatsSource], exported: Iterable[Exported]) -> None:
        self._sources = dict(sources)
        self._exported = list(exported)

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        snapshots = {name: dict(read()) for name, read in self._sources.items()}
        for item in self._exported:
            value = snapshots.get(item.source, {}).get(item.key)
            if value is None:
                continue
            if item.kind == "counter":
                family: CounterMetricFamily | GaugeMetricFamily = CounterMetricFamily(item.name, item.help)
            else:
                family = GaugeMetricFamily(item.name, item.help)
            family.add_metric([], float(value))
            yield family

    def describe(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        return []


SIP_METRICS = (
    Exported("endpoint", "messages_in", "uc_sip_messages_received", "SIP messages received (all transports)"),
    Exported(
        "endpoint", "messages_out", "uc_sip_messages_sent", "SIP messages sent, retransmissions included"
    ),
    Exported("endpoint", "requests_in", "uc_sip_requests_received", "SIP requests received"),
    Exported("endpoint", "responses_in", "uc_sip_responses_received", "SIP responses received"),
    Exported("endpoint", "parse_errors", "uc_sip_parse_errors", "SIP messages that failed to parse"),
    Exported(
        "endpoint",
        "bad_requests_sent",
        "uc_sip_bad_requests_sent",
        "400 Bad Request sent for malformed requests",
    ),
    Exported(
        "endpoint",
        "stateless_responses_sent",
        "uc_sip_stateless_responses_sent",
        "responses sent statelessly",
    ),
    Exported(
        "endpoint", "retransmissions_sent", "uc_sip_retransmissions_sent", "retransmissions sent over UDP"
    ),
    Exported(
        "endpoint",
        "retransmissions_absorbed",
        "uc_sip_retransmissions_absorbed",
        "retransmitted requests absorbed by a transaction",
    ),
    Exported(
        "endpoint", "stray_responses", "uc_sip_stray_responses", "responses matching no client transaction"
    ),
    Exported("endpoint", "transactions_created", "uc_sip_transactions_created", "SIP transactions created"),
    Exported(
        "endpoint", "transactions_terminated", "uc_sip_transactions_terminated", "SIP transactions terminated"
    ),
    Exported(
        "endpoint",
        "transaction_timeouts",
        "uc_sip_transaction_timeouts",
        "client transactions that timed out",
    ),
    Exported("endpoint", "loops_detected", "uc_sip_loops_detected", "482 Loop Detected answers"),
    Exported("endpoint", "too_many_hops", "uc_sip_too_many_hops", "483 Too Many Hops answers"),
    Exported(
        "endpoint",
        "overload_rejections",
        "uc_sip_overload_rejections",
        "503 answers because the transaction table was full",
    ),
    Exported(
        "endpoint",
        "invites_shed",
        "uc_sip_invites_shed",
        "new INVITEs answered 503 by overload control (SIP messages waited too long to be read)",
    ),
    Exported(
        "overload",
        "queue_delay",
        "uc_sip_queue_delay_seconds",
        "how long a SIP message waits to be read (overload control's probe)",
        "gauge",
    ),
    Exported(
        "overload",
        "refused_share",
        "uc_sip_overload_refused_share",
        "share of new calls overload control refuses now (0-1)",
        "gauge",
    ),
    Exported(
        "overload", "probes_lost", "uc_sip_overload_probes_lost", "overload probes that never came back"
    ),
    Exported("endpoint", "transport_errors", "uc_sip_transport_errors", "messages that could not be sent"),
    Exported(
        "endpoint", "active_transactions", "uc_sip_active_transactions", "SIP transactions alive now", "gauge"
    ),
    Exported("flood", "allowed", "uc_sip_flood_allowed", "requests let through by flood protection"),
    Exported("flood", "dropped", "uc_sip_flood_dropped", "requests dropped from banned sources"),
    Exported(
        "flood",
        "rejected_503",
        "uc_sip_flood_rejected",
        "requests answered 503 because their source is banned",
    ),
    Exported("flood", "bans", "uc_sip_flood_bans", "sources banned for flooding"),
    Exported(
        "flood", "auth_failures", "uc_sip_auth_failures", "failed authentications counted by flood protection"
    ),
    Exported(
        "flood",
        "auth_blocked",
        "uc_sip_auth_blocked",
        "authentication attempts refused after too many failures",
    ),
    Exported("flood", "auth_bans", "uc_sip_auth_bans", "users or sources banned for guessing passwords"),
    Exported(
        "flood", "tracked", "uc_sip_flood_tracked_sources", "sources tracked by flood protection", "gauge"
    ),
    Exported("digest", "challenges", "uc_sip_auth_challenges", "digest challenges sent"),
    Exported("digest", "accepted", "uc_sip_auth_ok", "digest authentications that succeeded"),
    Exported("digest", "invalid", "uc_sip_auth_invalid", "digest authentications with wrong credentials"),
    Exported("digest", "stale", "uc_sip_auth_stale", "digest authentications with an expired nonce"),
    Exported(
        "digest", "replayed", "uc_sip_auth_replayed", "digest authentications with a replayed nonce count"
    ),
    Exported("digest", "bad_request", "uc_sip_auth_malformed", "malformed Authorization headers"),
    Exported("registrar", "registrations", "uc_sip_registrations", "REGISTER requests accepted"),
    Exported("registrar", "rejections", "uc_sip_register_rejections", "REGISTER requests refused"),
    Exported(
        "registrar",
        "overloaded",
        "uc_sip_register_overload_rejections",
        "REGISTER requests answered 503 because the registrar's backlog was full",
    ),
)
