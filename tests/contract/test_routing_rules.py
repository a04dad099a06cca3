"""RoutingRuleSource contract: ``StaticRoutingRules`` and ``PgAccountStore.rules_for`` (real PostgreSQL).

Both sources answer the same questions the same way: an account's enabled rules, lowest priority number
first, with action/target/condition_type/priority mapped as call control reads them; nothing for an
account without rules; never another account's rules. The PostgreSQL source is also driven through the
real ``CallRouter`` (forward and reject rules change where a call goes).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import pytest

from signaling.callcontrol.actions import RouteQuery, RouteReject, RouteToContacts
from signaling.callcontrol.config import CallControlConfig
from signaling.callcontrol.router import CallRouter, RoutingRule, RoutingRuleSource, StaticRoutingRules
from storage.memory.hot import MemoryLocationStore
from storage.ports import Binding
from storage.postgres.accounts import PgAccountStore
from storage.postgres.credentials import ScryptCost
from tests.contract.pg_fixtures import open_pool, pg_database, pg_templates  # noqa: F401

FAST_SCRYPT = ScryptCost(n=2, r=1, p=1)
REALM = "uc-edge"
DOMAIN = "uc-edge.local"
BASE_TIME = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


@dataclass
class RulesBackend:
    """A rule source under test plus a way to give an account rules in that source."""

    kind: str
    source: RoutingRuleSource
    pool: asyncpg.Pool | None = None
    accounts: PgAccountStore | None = None
    static: dict[uuid.UUID, list[RoutingRule]] = field(default_factory=dict)
    added: int = 0

    async def new_account(self, username: str) -> uuid.UUID:
        if self.accounts is None:
            return uuid.uuid4()
        return (await self.accounts.add_sip_account(username, "a-long-password", REALM)).account_id

    async def add_rule(self, account_id: uuid.UUID, rule: RoutingRule, *, enabled: bool = True) -> None:
        """Rules are added oldest first; rows get increasing ``created_at`` (ties ordered by age)."""
        self.added += 1
        if self.pool is None:
            if enabled:  # a static source holds only the rules in force
                self.static.setdefault(account_id, []).append(rule)
                assert isinstance(self.source, StaticRoutingRules)
                self.source.rules = dict(self.static)
            return
        await self.pool.execute(
            "INSERT INTO routing_rules (account_id, priority, condition_type, action, target, enabled,"
            " created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            account_id,
            rule.priority,
            rule.condition_type,
            rule.action,
            rule.target,
            enabled,
            BASE_TIME + dt.timedelta(seconds=self.added),
        )


@pytest.fixture(params=["static", "postgres"])
async def rules(
    request: pytest.FixtureRequest,
    pg_database: Callable[[str], Awaitable[str]],  # noqa: F811
) -> AsyncIterator[RulesBackend]:
    if request.param == "static":
        yield RulesBackend("static", StaticRoutingRules())
        return
    pool = await open_pool(await pg_database("accounts"))
    try:
        store = PgAccountStore(pool, scrypt_cost=FAST_SCRYPT)
        yield RulesBackend("postgres", store, pool=pool, accounts=store)
    finally:
        await pool.close()


async def test_an_account_without_rules_has_none(rules: RulesBackend) -> None:
    account = await rules.new_account("norules")
    assert list(await rules.source.rules_for(account)) == []
    assert list(await rules.source.rules_for(uuid.uuid4())) == []  # no such account at all


async def test_rules_come_lowest_priority_first_with_every_field(rules: RulesBackend) -> None:
    account = await rules.new_account("alice")
    late = RoutingRule(action="voicemail", target=None, condition_type="presence", priority=300)
    first = RoutingRule(
        action="forward", target="sip:bob@uc-edge.local", condition_type="always", priority=10
    )
    middle = RoutingRule(action="ring_devices", target=None, condition_type="time", priority=100)
    for rule in (late, first, middle):
        await rules.add_rule(account, rule)

    assert list(await rules.source.rules_for(account)) == [first, middle, late]


async def test_equal_priorities_keep_the_order_the_rules_were_added(rules: RulesBackend) -> None:
    account = await rules.new_account("carol")
    added = [
        RoutingRule(action="forward", target=f"sip:{n}@uc-edge.local", condition_type="always", priority=50)
        for n in ("one", "two", "three")
    ]
    for rule in added:
        await rules.add_rule(account, rule)
    assert list(await rules.source.rules_for(account)) == added


async def test_disabled_rules_and_other_accounts_rules_are_left_out(rules: RulesBackend) -> None:
    mine, theirs = await rules.new_account("dave"), await rules.new_account("erin")
    kept = RoutingRule(action="reject", condition_type="always", priority=20)
    await rules.add_rule(
        mine, RoutingRule(action="forward", target="sip:x@uc-edge.local", priority=1), enabled=False
    )
    await rules.add_rule(mine, kept)
    await rules.add_rule(theirs, RoutingRule(action="queue", target="support", priority=5))

    assert list(await rules.source.rules_for(mine)) == [kept]
    assert [r.action for r in await rules.source.rules_for(theirs)] == ["queue"]


async def test_the_router_follows_rules_read_from_postgres(rules: RulesBackend) -> None:
    """A forward rule sends alice's calls to bob's contact; a reject rule on carol answers 603."""
    if rules.accounts is None:
        pytest.skip("needs accounts with credentials: the PostgreSQL source")
    alice_id = await rules.new_account("alice")
    bob_id = await rules.new_account("bob")
    carol_id = await rules.new_account("carol")
    await rules.add_rule(alice_id, RoutingRule(action="forward", target="sip:bob@uc-edge.local", priority=10))
    await rules.add_rule(carol_id, RoutingRule(action="reject", priority=10))

    location = MemoryLocationStore(clock=lambda: 1000.0)
    bob_aor = f"sip:bob@{DOMAIN}"
    await location.save(bob_aor, [Binding(bob_aor, "sip:bob@127.0.0.1:5999", expires_at=2000.0)], [], 1000.0)
    router = CallRouter(
        CallControlConfig(),
        location=location,
        credentials=rules.accounts.lookup_credentials,
        rules=rules.source,
        clock=lambda: 1000.0,
    )

    to_alice = await router.resolve(RouteQuery("alice", DOMAIN, None, None))
    assert isinstance(to_alice, RouteToContacts)
    assert to_alice.target == bob_aor
    assert [c.uri for c in to_alice.contacts] == ["sip:bob@127.0.0.1:5999"]
    assert to_alice.account_id == bob_id

    to_carol = await router.resolve(RouteQuery("carol", DOMAIN, None, None))
    assert isinstance(to_carol, RouteReject)
    assert to_carol.status == 603
