"""Connections to PostgreSQL with one-line errors: what could not be reached and how to fix it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg

from storage.postgres.errors import DatabaseUnavailable

DEFAULT_CONNECT_TIMEOUT = 5.0
DSN_SETTING = "UC_EDGE_DB_DSN"


def server_address(dsn: str) -> str:
    """``host:port`` of a DSN for messages (never the password); a DSN without a host means the socket."""
    parts = urlsplit(dsn)
    host = parts.hostname or "the local socket"
    try:
        port = parts.port or 5432
    except ValueError:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def dsn_database(dsn: str) -> str | None:
    """The database a DSN names, or None when it names none."""
    name = urlsplit(dsn).path.lstrip("/")
    return name or None


def _reason(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(error, asyncpg.InvalidPasswordError):
        return "password authentication failed"
    if isinstance(error, asyncpg.InvalidAuthorizationSpecificationError):
        return f"role refused: {error}"
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return str(error)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return f"{type(error).__name__}: {error}"


def unavailable(dsn: str, error: BaseException) -> DatabaseUnavailable:
    """The one-line error for a connection attempt that failed with ``error``."""
    where = server_address(dsn)
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return DatabaseUnavailable(
            f"PostgreSQL at {where}: {error} — run `uc-edge migrate` to create the domain databases"
        )
    if isinstance(error, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return DatabaseUnavailable(
            f"PostgreSQL at {where} refused the login ({_reason(error)}) — check the user and password in "
            f"{DSN_SETTING} (`scripts/services up` creates the uc_edge role)"
        )
    return DatabaseUnavailable(
        f"cannot reach PostgreSQL at {where} ({_reason(error)}) — start it with `scripts/services up` "
        f"or set {DSN_SETTING}"
    )


async def connect(
    dsn: str, *, database: str | None = None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> asyncpg.Connection:
    """A connection to ``database`` (default: the DSN's) or :class:`DatabaseUnavailable` saying why not."""
    try:
        return await asyncpg.connect(dsn, database=database, timeout=connect_timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise unavailable(dsn, error) from error


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg ships no stubs
    """A pooled connection released without asyncpg's reset query.

    asyncpg sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every release: one
    round trip per transaction, a fifth of a call's database cost. Pooled connections here keep no
    session state to undo — statements use transaction-scoped advisory locks only
    (``pg_advisory_xact_lock``), no cursors outside a transaction, no ``SET``; LISTEN and
    ``pg_advisory_lock`` (migrations) run on connections of their own (:func:`connect`). An open
    transaction is still rolled back on release (``Connection.reset`` does that before this query).
    """

    __slots__ = ()

    def get_reset_query(self) -> str:
        return ""


async def create_pool(
    dsn: str,
    *,
    database: str | None = None,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    connection_class: type[PooledConnection] = PooledConnection,
) -> asyncpg.Pool:
    """A pool for one domain database, or :class:`DatabaseUnavailable` saying why not.

    ``connection_class`` lets a benchmark count round trips (a subclass of :class:`PooledConnection`)."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            database=database,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            connection_class=connection_class,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise unavailable(dsn, error) from error
    assert pool is not None
    return pool


# Errors meaning the server went away (restart, failover, network) rather than a bad statement.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    OSError,
    TimeoutError,
)


@contextlib.asynccontextmanager
async def transaction(pool: asyncpg.Pool, what: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction; a lost server becomes :class:`DatabaseUnavailable` naming ``what``.

    The transaction is all or nothing: when the connection drops before COMMIT nothing of it is kept.
    """
    try:
        async with pool.acquire() as conn, conn.transaction():
            yield conn
    except (*CONNECTION_LOST, asyncpg.InterfaceError, asyncpg.InternalClientError) as error:
        if not is_connection_loss(error):
            raise
        raise DatabaseUnavailable(
            f"lost the connection to PostgreSQL while {what} ({type(_root(error)).__name__}) — nothing "
            "was saved unless the loss hit the commit itself; retry once PostgreSQL answers "
            "(`scripts/services status`)"
        ) from error


def is_connection_loss(error: BaseException) -> bool:
    """A dropped server connection; asyncpg may report it as an InterfaceError raised while cleaning up."""
    if isinstance(error, CONNECTION_LOST):
        return True
    if isinstance(error, asyncpg.InternalClientError):
        # A pooled connection that read the server's shutdown notice before its socket closed reports
        # "cannot switch to state …" on the next query (asyncpg#784): inside transaction() the connection
        # is ours alone, so this can only mean the server went away.
        return True
    if isinstance(error, asyncpg.InterfaceError):
        return "connection is closed" in str(error) or isinstance(error.__context__, CONNECTION_LOST)
    return False


def _root(error: BaseException) -> BaseException:
    context = error.__context__
    return context if isinstance(error, asyncpg.InterfaceError) and context is not None else error
