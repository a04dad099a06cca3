"""A number the credential cache already knows has no account here is routed to the catch-all trunk
without a lookup (and so without a task in call control); anything not known waits for the lookup."""

from __future__ import annotations

from edge.sip_node import CredentialCache
from signaling.callcontrol.actions import RouteQuery, RouteReject, RouteToContacts
from signaling.callcontrol.config import CallControlConfig, Trunk
from signaling.callcontrol.router import CallRouter
from storage.memory.hot import MemoryLocationStore
from storage.memory.sql_domains import MemoryAccountStore

CATCH_ALL = Trunk(name="carrier", host="192.0.2.50", port=5060, prefixes=("",))


class CountingAccounts(MemoryAccountStore):
    def __init__(self) -> None:
        super().__init__()
        self.lookups: list[str] = []

    async def lookup_credentials(self, username: str, realm: str):  # type: ignore[no-untyped-def]
        self.lookups.append(username)
        return await super().lookup_credentials(username, realm)


def query(user: str, host: str = "uc-edge.local") -> RouteQuery:
    return RouteQuery(user, host, None, None)


async def setup(*trunks: Trunk) -> tuple[CallRouter, CountingAccounts]:
    accounts = CountingAccounts()
    await accounts.add_sip_account("alice", "correct horse battery", "uc-edge")
    cache = CredentialCache(accounts, ttl_seconds=60.0)  # type: ignore[arg-type]
    router = CallRouter(
        CallControlConfig(trunks=trunks),
        location=MemoryLocationStore(),
        credentials=cache.lookup,
        known_absent=cache.known_absent,
    )
    return router, accounts


async def test_a_number_known_to_have_no_account_goes_to_the_catch_all_trunk_without_a_lookup() -> None:
    router, accounts = await setup(CATCH_ALL)
    assert router.resolve_static(query("15550100")) is None  # not known yet: the lookup decides
    first = await router.resolve(query("15550100"))
    assert isinstance(first, RouteToContacts) and first.trunk is not None and first.trunk.name == "carrier"
    assert accounts.lookups == ["15550100"]
    again = router.resolve_static(query("15550100"))  # the cache now says "no such account"
    assert isinstance(again, RouteToContacts) and again.trunk is not None and again.trunk.name == "carrier"
    assert accounts.lookups == ["15550100"]


async def test_a_known_absent_number_without_a_trunk_is_404() -> None:
    router, _accounts = await setup()
    await router.resolve(query("15550100"))
    route = router.resolve_static(query("15550100"))
    assert isinstance(route, RouteReject) and (route.status, route.reason) == (404, "no such user")


async def test_a_user_of_ours_is_never_decided_statically() -> None:
    router, accounts = await setup(CATCH_ALL)
    routed = await router.resolve(query("alice"))
    assert isinstance(routed, RouteReject) and routed.status == 480  # ours, not registered: not the trunk
    assert router.resolve_static(query("alice")) is None  # cached as present: still needs the location
    assert accounts.lookups == ["alice"]


async def test_a_foreign_domain_goes_to_the_trunk_or_is_refused_without_a_lookup() -> None:
    router, accounts = await setup(CATCH_ALL)
    route = router.resolve_static(query("15550100", "elsewhere.example"))
    assert isinstance(route, RouteToContacts) and route.trunk is not None
    router_without_trunk, _ = await setup()
    refused = router_without_trunk.resolve_static(query("15550100", "elsewhere.example"))
    assert isinstance(refused, RouteReject) and refused.reason == "domain not served here"
    assert accounts.lookups == []
