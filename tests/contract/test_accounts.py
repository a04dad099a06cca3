"""AccountRepository / CredentialStore contract: the in-memory fake and PostgreSQL pass the same checks."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import pytest

from storage.memory.sql_domains import MemoryAccountStore
from storage.ports import AccountExists, AccountRepository
from storage.postgres.accounts import PgAccountStore, open_account_store
from storage.postgres.credentials import InvalidAccountInput, ScryptCost, verify_password
from tests.contract.pg_fixtures import open_pool, pg_database, pg_templates  # noqa: F401

FAST_SCRYPT = ScryptCost(n=2**10, r=8, p=1)
REALM = "edge.example"


@dataclass
class AccountsBackend:
    kind: str
    store: AccountRepository
    pool: asyncpg.Pool | None

    async def stored_password_hash(self, username: str) -> str:
        """The password as the backend stores it, to show it is a salted hash."""
        if isinstance(self.store, MemoryAccountStore):
            account = next(a for a in await self.store.list_sip_accounts() if a.username == username)
            return self.store.password_hash(account.account_id)
        assert self.pool is not None
        value = await self.pool.fetchval(
            "SELECT a.password_hash FROM accounts a JOIN sip_credentials c USING (account_id)"
            " WHERE c.username = $1",
            username,
        )
        assert isinstance(value, str)
        return value


@pytest.fixture(params=["memory", "postgres"])
async def accounts(
    request: pytest.FixtureRequest,
    pg_database: Callable[[str], Awaitable[str]],  # noqa: F811
) -> AsyncIterator[AccountsBackend]:
    if request.param == "memory":
        yield AccountsBackend("memory", MemoryAccountStore(scrypt_cost=FAST_SCRYPT), None)
        return
    pool = await open_pool(await pg_database("accounts"))
    try:
        yield AccountsBackend("postgres", PgAccountStore(pool, scrypt_cost=FAST_SCRYPT), pool)
    finally:
        await pool.close()


def ha1(name: str, text: str) -> str:
    return hashlib.new(name, text.encode()).hexdigest()


async def test_added_account_yields_digest_ha1_per_algorithm(accounts: AccountsBackend) -> None:
    account = await accounts.store.add_sip_account("alice", "s3cret!", REALM, email="alice@example.com")
    assert account.username == "alice" and account.realm == REALM and account.status == "active"

    creds = await accounts.store.lookup_credentials("alice", REALM)
    assert creds is not None
    assert creds.account_id == account.account_id
    assert creds.ha1("MD5") == ha1("md5", f"alice:{REALM}:s3cret!")
    assert creds.ha1("MD5-sess") == creds.ha1_md5
    assert creds.ha1("SHA-256") == ha1("sha256", f"alice:{REALM}:s3cret!")
    assert creds.ha1("SHA-512-256") == ha1("sha512_256", f"alice:{REALM}:s3cret!")
    assert creds.ha1("SHA-1") is None
    # the RFC 2617 §3.5 example: HA1 of Mufasa:testrealm@host.com:Circle Of Life
    await accounts.store.add_sip_account("Mufasa", "Circle Of Life", "testrealm@host.com")
    mufasa = await accounts.store.lookup_credentials("Mufasa", "testrealm@host.com")
    assert mufasa is not None and mufasa.ha1_md5 == "939e7578ed9e3c518a452acee763bce9"


async def test_password_is_stored_as_salted_scrypt_only(accounts: AccountsBackend) -> None:
    await accounts.store.add_sip_account("bob", "hunter2-long", REALM)
    await accounts.store.add_sip_account("carol", "hunter2-long", REALM)
    bob_hash = await accounts.stored_password_hash("bob")
    carol_hash = await accounts.stored_password_hash("carol")
    assert "hunter2" not in bob_hash
    assert bob_hash.startswith("scrypt$")
    assert bob_hash != carol_hash  # a salt per account
    assert verify_password("hunter2-long", bob_hash)
    assert not verify_password("hunter2-lonG", bob_hash)


async def test_lookup_is_per_realm_and_unknown_users_are_none(accounts: AccountsBackend) -> None:
    await accounts.store.add_sip_account("dave", "pw-one", REALM)
    await accounts.store.add_sip_account("dave", "pw-two", "other.example")
    here = await accounts.store.lookup_credentials("dave", REALM)
    there = await accounts.store.lookup_credentials("dave", "other.example")
    assert here is not None and there is not None
    assert here.ha1_md5 != there.ha1_md5 and here.account_id != there.account_id
    assert await accounts.store.lookup_credentials("dave", "nowhere.example") is None
    assert await accounts.store.lookup_credentials("erin", REALM) is None


async def test_duplicate_user_in_realm_is_refused(accounts: AccountsBackend) -> None:
    await accounts.store.add_sip_account("frank", "pw", REALM, email="frank@example.com")
    with pytest.raises(AccountExists, match="frank"):
        await accounts.store.add_sip_account("frank", "other", REALM)
    with pytest.raises(AccountExists, match="e-mail"):
        await accounts.store.add_sip_account("frank2", "other", REALM, email="Frank@example.com")
    assert [a.username for a in await accounts.store.list_sip_accounts()] == ["frank"]


async def test_list_is_sorted_and_remove_soft_deletes(accounts: AccountsBackend) -> None:
    for name in ("zed", "amy", "kim"):
        await accounts.store.add_sip_account(name, f"pw-{name}", REALM)
    assert [a.username for a in await accounts.store.list_sip_accounts()] == ["amy", "kim", "zed"]

    assert await accounts.store.remove_sip_account("kim", REALM) is True
    assert await accounts.store.remove_sip_account("kim", REALM) is False
    assert await accounts.store.remove_sip_account("nobody", REALM) is False
    assert await accounts.store.lookup_credentials("kim", REALM) is None
    assert [a.username for a in await accounts.store.list_sip_accounts()] == ["amy", "zed"]
    # the name is free again after removal
    again = await accounts.store.add_sip_account("kim", "new-pw", REALM)
    creds = await accounts.store.lookup_credentials("kim", REALM)
    assert creds is not None and creds.account_id == again.account_id
    assert creds.ha1_md5 == ha1("md5", f"kim:{REALM}:new-pw")


@pytest.mark.parametrize(
    ("username", "password", "realm", "email", "complaint"),
    [
        ("", "pw", REALM, None, "username"),
        ("al ice", "pw", REALM, None, "username"),
        ("al:ice", "pw", REALM, None, "username"),
        ("x" * 65, "pw", REALM, None, "username"),
        ("alice", "", REALM, None, "password"),
        ("alice", "p\x00w", REALM, None, "password"),
        ("alice", "p" * 1025, REALM, None, "password"),
        ("alice", "pw", "", None, "realm"),
        ("alice", "pw", 'ev"il', None, "realm"),
        ("alice", "pw", REALM, "not-an-address", "e-mail"),
    ],
)
async def test_bad_input_is_refused_with_the_reason(
    accounts: AccountsBackend, username: str, password: str, realm: str, email: str | None, complaint: str
) -> None:
    with pytest.raises(InvalidAccountInput, match=complaint):
        await accounts.store.add_sip_account(username, password, realm, email=email)
    assert await accounts.store.list_sip_accounts() == []


async def test_postgres_keeps_no_plain_password_anywhere(
    pg_database: Callable[[str], Awaitable[str]],  # noqa: F811
) -> None:
    dsn = await pg_database("accounts")
    async with open_account_store(dsn) as store:
        await store.add_sip_account("grace", "Tr0ub4dor&3", REALM)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT to_jsonb(a)::text AS a, to_jsonb(c)::text AS c"
            " FROM accounts a JOIN sip_credentials c USING (account_id)"
        )
        status = await conn.fetchval("SELECT status FROM accounts")
    finally:
        await conn.close()
    assert len(rows) == 1 and "Tr0ub4dor" not in rows[0]["a"] + rows[0]["c"]
    assert status == "active"
