"""Where a call goes: echo number, trunk prefix, account routing rules, registered contacts (async lookups).

The pure :class:`~signaling.callcontrol.call.Call` asks with a :class:`RouteQuery`; the service awaits
:meth:`CallRouter.resolve` and feeds the :class:`Route` back. Lookups go through ports only: the
``LocationStore`` (registrar bindings), a credential store (does the user exist, which account), and
an optional :class:`RoutingRuleSource` (``routing_rules`` of DB_ACCOUNTS).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from signaling.callcontrol.actions import (
    Contact,
    Route,
    RouteEcho,
    RouteQuery,
    RouteReject,
    RouteToContacts,
)
from signaling.callcontrol.config import CallControlConfig, Trunk
from signaling.sip.routing import TRANSPORTS, TransportAddress
from storage.ports import Binding, LocationStore, RoutingRule, SipCredentials

CredentialLookup = Callable[[str, str], Awaitable[SipCredentials | None]]


class RoutingRuleSource(Protocol):
    async def rules_for(self, account_id: uuid.UUID) -> Sequence[RoutingRule]:
        """Enabled rules of the account, lowest priority number first."""
        ...


class StaticRoutingRules:
    """Rules held in memory (tests, or a node without DB_ACCOUNTS rules)."""

    def __init__(self, rules: Mapping[uuid.UUID, Sequence[RoutingRule]] | None = None) -> None:
        self.rules = dict(rules or {})

    async def rules_for(self, account_id: uuid.UUID) -> Sequence[RoutingRule]:
        return sorted(self.rules.get(account_id, ()), key=lambda rule: rule.priority)


def _flow_of(binding: Binding) -> TransportAddress | None:
    """Requests to a registered contact go over its flow (TCP/TLS/WS connection) or to the address its
    REGISTER came from (NAT); the contact URI itself is used only when nothing was recorded."""
    received = binding.received
    if received is None or received.transport not in TRANSPORTS:
        return None
    return TransportAddress(
        received.transport,  # type: ignore[arg-type]
        received.host,
        received.port,
        received.connection_id,
    )


class CallRouter:
    def __init__(
        self,
        config: CallControlConfig,
        *,
        location: LocationStore,
        credentials: CredentialLookup | None = None,
        known_absent: Callable[[str, str], bool] | None = None,
        rules: RoutingRuleSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.location = location
        self.credentials = credentials
        # Whether (user, realm) is known, without waiting, to have no account here (a fresh negative entry
        # of the credential cache): a call to a trunk's catch-all is then routed without a lookup.
        self.known_absent = known_absent
        self.rules = rules
        self.clock = clock

    def resolve_static(self, query: RouteQuery, depth: int = 0) -> Route | None:
        """The route when it needs no lookup — no user part, echo number, trunk prefix, a domain not ours,
        a user known to have no account here — or None when :meth:`resolve` must look it up. Lets the
        shell place such calls without a task."""
        user = query.user
        if not user:
            return RouteReject(f"sip:{query.host.lower()}", 404, "not_found", "no user part")
        config = self.config
        if user in config.echo_numbers:
            return RouteEcho(user)
        trunk_route = config.trunk_for_user(user)
        if trunk_route is not None and trunk_route[0].matches(user):
            return self._to_trunk(*trunk_route)
        host = query.host.lower()
        if host not in config.local_domains and depth == 0 and query.from_trunk is None:
            # not our domain and no trunk prefix: we are not an open relay
            if trunk_route is not None:
                return self._to_trunk(*trunk_route)
            return RouteReject(f"sip:{user}@{host}", 404, "not_found", "domain not served here")
        if (
            self.credentials is not None
            and self.known_absent is not None
            and self.known_absent(user, config.realm)
        ):
            return self._not_ours(user, trunk_route)
        return None

    def _not_ours(self, user: str, trunk_route: tuple[Trunk, str] | None) -> Route:
        if trunk_route is not None:  # catch-all trunk: every number that is not ours
            return self._to_trunk(*trunk_route)
        return RouteReject(f"sip:{user}@{self.config.domain}", 404, "not_found", "no such user")

    async def resolve(self, query: RouteQuery, depth: int = 0) -> Route:
        static = self.resolve_static(query, depth)
        if static is not None:
            return static
        config = self.config
        user, host = query.user, query.host.lower()
        account_id: uuid.UUID | None = None
        if self.credentials is not None:
            found = await self.credentials(user, config.realm)
            if found is None:
                return self._not_ours(user, config.trunk_for_user(user))
            account_id = found.account_id
        if account_id is not None and self.rules is not None:
            for rule in await self.rules.rules_for(account_id):
                if rule.condition_type != "always":
                    continue
                if rule.action == "reject":
                    return RouteReject(f"sip:{user}@{config.domain}", 603, "rejected", "routing rule")
                if rule.action == "forward" and rule.target and depth < config.max_routing_depth:
                    forwarded = _query_for(rule.target, query)
                    if forwarded is not None:
                        return await self.resolve(forwarded, depth + 1)
        return await self._to_user(user, host, account_id)

    async def _to_user(self, user: str, host: str, account_id: uuid.UUID | None) -> Route:
        config = self.config
        now = self.clock()
        candidates = [f"sip:{user}@{config.domain}"]
        if host != config.domain and host in config.local_domains:
            candidates.insert(0, f"sip:{user}@{host}")
        for aor in candidates:
            bindings = await self.location.lookup(aor, now)
            if bindings:
                ordered = sorted(bindings, key=lambda b: -(b.q if b.q is not None else 1.0))
                contacts = tuple(
                    Contact(binding.contact_uri, _flow_of(binding)) for binding in ordered[: config.max_forks]
                )
                return RouteToContacts(aor, contacts, f"<sip:{user}@{config.domain}>", account_id)
        return RouteReject(candidates[-1], 480, "unavailable", "not registered")

    def _to_trunk(self, trunk: Trunk, number: str) -> Route:
        # The Request-URI, To and From keep the trunk's host as configured (a name stays a name); only
        # the transport destination is the address the node resolved that name to (A/AAAA lookups done
        # by edge/trunk_dns.py: a static trunk's host:port is the next hop, so no RFC 3263 SRV/NAPTR).
        suffix = "" if trunk.transport == "udp" else f";transport={trunk.transport}"
        uri = f"sip:{number}@{trunk.host}:{trunk.port}{suffix}"
        hosts = self.config.trunk_addresses.transport_hosts(trunk)
        if not hosts:
            return RouteReject(
                uri, 503, "failed", f"trunk {trunk.name}: host {trunk.host} is not resolved yet"
            )
        # Every address the name resolved to, in the resolver's order: the first is dialled, the others
        # are tried one after the other when it fails (RFC 3263 §4.3), not rung in parallel.
        server_name = self.config.trunk_addresses.server_name(trunk)
        flow, *failover = (
            TransportAddress(trunk.transport, host, trunk.port, server_name=server_name)  # type: ignore[arg-type]
            for host in hosts
        )
        return RouteToContacts(
            uri,
            (Contact(uri, flow, tuple(failover)),),
            f"<sip:{number}@{trunk.host}>",
            trunk=trunk,
            leg_type="pstn",
        )


def _query_for(target: str, original: RouteQuery) -> RouteQuery | None:
    """A forwarding target (``sip:user@host`` or a bare user/number) as a new query."""
    text = target.strip()
    if text.startswith(("sip:", "sips:")):
        text = text.split(":", 1)[1]
    user, _, host = text.partition("@")
    host = host.split(";", 1)[0].split(":", 1)[0]
    if not user:
        return None
    return RouteQuery(user, host or original.host, original.caller_account_id, original.from_trunk)
