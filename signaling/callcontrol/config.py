"""Call-control configuration: timeouts, codecs, the echo test numbers and static trunks.

Plain frozen dataclasses built by the composition root (``edge``) from settings; nothing here reads the
environment. :func:`parse_trunks` turns the TOML/JSON-ish list an operator writes into :class:`Trunk`s.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from signaling.sdp import Codec

# What B legs are offered and A legs are answered with (RFC 3264), in our order of preference:
# G.711 first, so two G.711 phones are relayed without transcoding.
CALL_CODECS: tuple[Codec, ...] = (
    Codec("PCMU", 8000, 1, 0),
    Codec("PCMA", 8000, 1, 8),
    Codec("opus", 48000, 2, None, "minptime=10;useinbandfec=1"),
    Codec("telephone-event", 8000, 1, None, "0-16"),
)


MIN_REGISTER_EXPIRES = 60
MAX_REGISTER_EXPIRES = 86400
# RFC 3261 §25.1 user (unreserved, escaped, user-unreserved without ';?/') and host (name, IPv4, [IPv6]).
_REGISTER_PATTERNS = {
    "register_user": re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,%]+"),
    "register_domain": re.compile(r"[A-Za-z0-9\-.]+|\[[0-9A-Fa-f:.]+\]"),
}


@dataclass(frozen=True, slots=True)
class Trunk:
    """A static SIP trunk: where outbound calls go (``host:port``), who may call us (``inbound_sources``).

    ``prefixes``: dialled users starting with one of them go out through this trunk (``""`` matches
    every user that is not a local account). ``username``/``password`` answer the trunk's 401/407.

    ``register``: keep a binding at the trunk's registrar (outbound registration, refreshed until the node
    stops) for ``sip:{register_user}@{register_domain}`` (defaults: ``username`` and ``host``), asking
    for ``register_expires`` seconds. A registering trunk without ``inbound_sources`` accepts calls from
    its host's address: a carrier we register with sends our calls from there. An IP host is that
    address; a host name is resolved by the node (:class:`TrunkAddresses`) and every address it
    resolves to is accepted (:meth:`CallControlConfig.trunk_for_source`).
    """

    name: str
    host: str
    port: int = 5060
    transport: str = "udp"
    username: str | None = None
    password: str | None = None
    prefixes: tuple[str, ...] = ()
    inbound_sources: tuple[str, ...] = ()
    strip_prefix: bool = False
    register: bool = False
    register_expires: int = 3600
    register_user: str | None = None
    register_domain: str | None = None
    # accepted_sources parsed once (accepts_from runs for every INVITE): single addresses as the text a
    # datagram's source arrives as, for a set lookup, and every source as a network.
    _source_addresses: frozenset[str] = field(init=False, repr=False, compare=False)
    _source_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False, compare=False
    )
    # ``host`` is a DNS name (not an IP literal): the node resolves it (edge/trunk_dns.py).
    host_is_name: bool = field(init=False, repr=False, compare=False)
    # A registering trunk without inbound_sources whose host is a name: it accepts calls from the
    # addresses that name resolves to, which only the node's TrunkAddresses knows.
    accepts_resolved_host: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name or not self.host:
            raise ValueError("a trunk needs a name and a host")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"trunk {self.name}: port {self.port} is out of range")
        if self.transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"trunk {self.name}: transport must be udp, tcp or tls, not {self.transport!r}")
        if (self.username is None) != (self.password is None):
            raise ValueError(f"trunk {self.name}: give both username and password, or neither")
        for source in self.inbound_sources:
            try:
                ipaddress.ip_network(source, strict=False)
            except ValueError:
                raise ValueError(
                    f"trunk {self.name}: inbound source {source!r} is not an IP or network"
                ) from None
        self._check_registration()
        host_is_name = not _is_ip_literal(self.host)
        object.__setattr__(self, "host_is_name", host_is_name)
        object.__setattr__(
            self, "accepts_resolved_host", host_is_name and self.register and not self.inbound_sources
        )
        networks = tuple(ipaddress.ip_network(source, strict=False) for source in self.accepted_sources)
        singles = {str(n.network_address) for n in networks if n.num_addresses == 1}
        object.__setattr__(self, "_source_networks", networks)
        object.__setattr__(self, "_source_addresses", frozenset(singles))

    def _check_registration(self) -> None:
        if not isinstance(self.register, bool):
            raise ValueError(f"trunk {self.name}: register must be true or false")
        if (
            not isinstance(self.register_expires, int)
            or isinstance(self.register_expires, bool)
            or not MIN_REGISTER_EXPIRES <= self.register_expires <= MAX_REGISTER_EXPIRES
        ):
            raise ValueError(
                f"trunk {self.name}: register_expires must be a whole number of seconds from "
                f"{MIN_REGISTER_EXPIRES} to {MAX_REGISTER_EXPIRES}, not {self.register_expires!r}"
            )
        for key, pattern in _REGISTER_PATTERNS.items():
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not pattern.fullmatch(value)):
                raise ValueError(f"trunk {self.name}: {key} {value!r} is not a SIP user or host")
        if self.register and self.registration_user is None:
            raise ValueError(f"trunk {self.name}: register needs register_user or username")

    @property
    def registration_user(self) -> str | None:
        """The user part of the address this node registers at the trunk."""
        return self.register_user or self.username

    @property
    def registration_domain(self) -> str:
        return self.register_domain or self.host

    @property
    def accepted_sources(self) -> tuple[str, ...]:
        """Who may call us through this trunk: ``inbound_sources``, else the registrar's own address.

        Static sources only: a host name gives none here (resolving it would be I/O); its resolved
        addresses are matched through :class:`TrunkAddresses` (see :meth:`accepts_from`)."""
        if self.inbound_sources or not self.register:
            return self.inbound_sources
        if self.host_is_name:
            return ()
        return (self.host.strip("[]"),)

    def accepts_from(self, host: str, resolved: TrunkAddresses | None = None) -> bool:
        """Whether a request from ``host`` (an IP address as text) comes from this trunk. ``resolved``:
        the node's current answers for trunk host names (used when :attr:`accepts_resolved_host`)."""
        if host in self._source_addresses:
            return True
        if self.accepts_resolved_host and resolved is not None and resolved.has(self.name, host):
            return True
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(address in network for network in self._source_networks)

    def matches(self, user: str) -> str | None:
        """The prefix of ``user`` this trunk serves (longest first), or None."""
        for prefix in sorted(self.prefixes, key=len, reverse=True):
            if user.startswith(prefix):
                return prefix
        return None


@dataclass(frozen=True, slots=True)
class CallControlConfig:
    """Behaviour of every call. Durations in seconds."""

    domain: str = "uc-edge.local"
    realm: str = "uc-edge"
    local_domains: frozenset[str] = frozenset({"uc-edge.local"})
    echo_numbers: frozenset[str] = frozenset({"echo", "9196"})
    no_answer_timeout: float = 60.0
    codecs: tuple[Codec, ...] = CALL_CODECS
    trunks: tuple[Trunk, ...] = ()
    require_auth: bool = True
    max_forks: int = 10
    max_routing_depth: int = 3
    notify_expires: int = 60
    # Where trunk host names resolve to right now: mutable, filled by the node (edge/trunk_dns.py) while
    # this configuration stays frozen; routing and trunk_for_source read it.
    trunk_addresses: TrunkAddresses = field(default_factory=lambda: TrunkAddresses(), compare=False)

    def __post_init__(self) -> None:
        if self.no_answer_timeout <= 0:
            raise ValueError("no_answer_timeout must be positive")
        if self.max_forks < 1:
            raise ValueError("max_forks must be at least 1")

    def trunk_for_source(self, host: str) -> Trunk | None:
        resolved = self.trunk_addresses
        return next((trunk for trunk in self.trunks if trunk.accepts_from(host, resolved)), None)

    def dials_out(self, user: str) -> bool:
        """Whether ``user`` is an outbound number by an explicit (non-empty) trunk prefix."""
        return user not in self.echo_numbers and any(trunk.matches(user) for trunk in self.trunks)

    def trunk_for_user(self, user: str) -> tuple[Trunk, str] | None:
        """(trunk, user as sent to it) for an outbound number, longest matching prefix across trunks."""
        best: tuple[Trunk, str, str] | None = None
        for trunk in self.trunks:
            prefix = trunk.matches(user)
            if prefix is not None and (best is None or len(prefix) > len(best[2])):
                best = (trunk, user[len(prefix) :] if trunk.strip_prefix else user, prefix)
        return (best[0], best[1]) if best is not None else None


TrunkFailoverListener = Callable[["TrunkFailover"], None]


@dataclass(frozen=True, slots=True)
class TrunkFailover:
    """An INVITE to one address of a trunk failed (``reason``: ``timeout``, ``transport error``,
    ``503``) and the call goes on to ``next_address`` (RFC 3263 §4.3)."""

    trunk: str
    address: str
    reason: str
    next_address: str


class TrunkAddresses:
    """The addresses trunk host names resolve to, by trunk name: written by the node's resolver
    (``edge/trunk_dns.py``, A and AAAA lookups), read by routing (where requests to a trunk go) and by
    :meth:`CallControlConfig.trunk_for_source` (who may call us). No I/O here: a trunk whose name has
    not been resolved yet simply has no addresses. Trunks whose host is an IP literal never appear.

    A call that moves on from a failed address emits ``ReportTrunkFailover``; whoever runs the call
    reports it here (:meth:`note_failover`): counted per trunk, and passed to listeners (the node's
    resolver logs them), so the count lives beside the addresses it is about.
    """

    __slots__ = ("_address_sets", "_addresses", "_failovers", "_listeners")

    def __init__(self) -> None:
        self._addresses: dict[str, tuple[str, ...]] = {}
        self._address_sets: dict[str, frozenset[str]] = {}  # for the per-INVITE source check
        self._failovers: dict[str, int] = {}
        self._listeners: list[TrunkFailoverListener] = []

    def set(self, trunk: str, addresses: Iterable[str]) -> None:
        """Replace the addresses of ``trunk`` (the first is where its requests go); none forgets it."""
        ordered = tuple(dict.fromkeys(addresses))
        if ordered:
            self._addresses[trunk] = ordered
            self._address_sets[trunk] = frozenset(ordered)
        else:
            self._addresses.pop(trunk, None)
            self._address_sets.pop(trunk, None)

    def get(self, trunk: str) -> tuple[str, ...]:
        return self._addresses.get(trunk, ())

    def has(self, trunk: str, address: str) -> bool:
        found = self._address_sets.get(trunk)
        return found is not None and address in found

    def transport_host(self, trunk: Trunk) -> str | None:
        """The host requests to ``trunk`` are sent to first (see :meth:`transport_hosts`), or None."""
        hosts = self.transport_hosts(trunk)
        return hosts[0] if hosts else None

    def transport_hosts(self, trunk: Trunk) -> tuple[str, ...]:
        """Where requests to ``trunk`` may go, in the order to try them: its IP; else every address its
        name resolved to (an INVITE moves on to the next when one fails, RFC 3263 §4.3); none while the
        name has no answer yet.

        Over TLS the address is dialled but the server's certificate is still checked against the name
        (RFC 5922 §4): see :meth:`server_name`."""
        if not trunk.host_is_name:
            return (trunk.host,)
        return self._addresses.get(trunk.name, ())

    @staticmethod
    def server_name(trunk: Trunk) -> str | None:
        """The name a TLS connection to one of ``trunk``'s addresses must find in the server's
        certificate (and sends as SNI): its configured host name; None for other transports and for a
        trunk configured by address (the address is then what is checked)."""
        return trunk.host if trunk.transport == "tls" and trunk.host_is_name else None

    def note_failover(self, failover: TrunkFailover) -> None:
        """A call gave up on one address of a trunk for the next: count it, tell the listeners."""
        self._failovers[failover.trunk] = self._failovers.get(failover.trunk, 0) + 1
        for listener in self._listeners:
            listener(failover)

    def failovers(self, trunk: str) -> int:
        """How many times calls moved on from a failed address of ``trunk`` (since the node started)."""
        return self._failovers.get(trunk, 0)

    def add_listener(self, listener: TrunkFailoverListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: TrunkFailoverListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def as_dict(self) -> dict[str, list[str]]:
        return {name: list(addresses) for name, addresses in self._addresses.items()}


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def parse_trunks(items: Iterable[Mapping[str, Any]]) -> tuple[Trunk, ...]:
    """Trunks from a list of tables (TOML ``[[trunks]]``, or JSON in ``UC_EDGE_TRUNKS``)."""
    trunks = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ValueError(f"trunk #{index + 1} must be a table")
        known = {spec.name for spec in fields(Trunk) if spec.init}  # not the fields derived at init
        unknown = set(item) - known
        if unknown:
            raise ValueError(f"trunk #{index + 1}: unknown keys {', '.join(sorted(unknown))}")
        values = dict(item)
        for key in ("prefixes", "inbound_sources"):
            if key in values:
                values[key] = tuple(_strings(values[key], key))
        trunks.append(Trunk(**values))
    names = [trunk.name for trunk in trunks]
    if len(set(names)) != len(names):
        raise ValueError("trunk names must be unique")
    return tuple(trunks)


def _strings(value: Any, key: str) -> Sequence[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"trunk {key} must be a list of strings")
