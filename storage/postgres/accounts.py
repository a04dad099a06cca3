"""SIP accounts in DB_ACCOUNTS: an ``accounts`` row plus ``sip_credentials`` holding HA1 values only."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg

from storage.ports import AccountExists, RoutingRule, SipAccount, SipCredentials
from storage.postgres.connect import create_pool, transaction
from storage.postgres.credentials import (
    DEFAULT_SCRYPT_COST,
    ScryptCost,
    check_email,
    check_password,
    check_realm,
    check_username,
    digest_ha1,
    hash_password,
)
from storage.postgres.sql import queries_for

_SQL = queries_for("accounts")


class PgAccountStore:
    """``AccountRepository`` on an asyncpg pool of the accounts database."""

    def __init__(self, pool: asyncpg.Pool, *, scrypt_cost: ScryptCost = DEFAULT_SCRYPT_COST) -> None:
        self._pool = pool
        self._scrypt_cost = scrypt_cost

    async def add_sip_account(
        self, username: str, password: str, realm: str, *, email: str | None = None
    ) -> SipAccount:
        check_username(username)
        check_realm(realm)
        check_password(password)
        check_email(email)
        ha1 = {alg: digest_ha1(alg, username, realm, password) for alg in ("MD5", "SHA-256", "SHA-512-256")}
        password_hash = hash_password(password, self._scrypt_cost)
        async with transaction(self._pool, "adding a SIP account") as conn:
            try:
                row = await conn.fetchrow(_SQL["insert_account"], email, password_hash)
                await conn.execute(
                    _SQL["insert_credentials"],
                    row["account_id"],
                    username,
                    realm,
                    ha1["MD5"],
                    ha1["SHA-256"],
                    ha1["SHA-512-256"],
                )
            except asyncpg.UniqueViolationError as error:
                if error.constraint_name == "accounts_live_email":
                    raise AccountExists(
                        f"e-mail address {email} is already used by another account"
                    ) from None
                raise AccountExists(f"SIP user {username!r} already exists in realm {realm!r}") from None
        return SipAccount(row["account_id"], username, realm, row["status"], row["email"], row["created_at"])

    async def list_sip_accounts(self) -> list[SipAccount]:
        rows = await self._pool.fetch(_SQL["list_sip_accounts"])
        return [
            SipAccount(r["account_id"], r["username"], r["realm"], r["status"], r["email"], r["created_at"])
            for r in rows
        ]

    async def remove_sip_account(self, username: str, realm: str) -> bool:
        rows = await self._pool.fetch(_SQL["remove_sip_account"], username, realm)
        return bool(rows)

    async def lookup_credentials(self, username: str, realm: str) -> SipCredentials | None:
        row = await self._pool.fetchrow(_SQL["lookup_credentials"], username, realm)
        if row is None:
            return None
        return SipCredentials(
            row["account_id"],
            row["username"],
            row["realm"],
            row["ha1_md5"],
            row["ha1_sha256"],
            row["ha1_sha512_256"],
        )

    async def rules_for(self, account_id: uuid.UUID) -> Sequence[RoutingRule]:
        """``RoutingRuleSource``: the account's enabled ``routing_rules``, lowest priority number first.

        Only what call control reads is mapped: the ``condition`` document and ``device_id`` stay in the
        table (the router applies ``always`` rules only and rings every registered device).
        """
        rows = await self._pool.fetch(_SQL["routing_rules_for_account"], account_id)
        return [
            RoutingRule(
                action=row["action"],
                target=row["target"],
                condition_type=row["condition_type"],
                priority=row["priority"],
            )
            for row in rows
        ]


@contextlib.asynccontextmanager
async def open_account_store(dsn: str, *, max_connections: int = 2) -> AsyncIterator[PgAccountStore]:
    """A store on its own small pool (for the CLI); raises ``DatabaseUnavailable`` with the fix."""
    pool = await create_pool(dsn, min_size=1, max_size=max_connections)
    try:
        yield PgAccountStore(pool)
    finally:
        await pool.close()
