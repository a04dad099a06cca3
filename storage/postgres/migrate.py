"""Create the domain databases and apply their versioned SQL migrations.

Layout: ``<migrations_dir>/<domain>/NNNN_name.sql`` (``accounts``, ``calls``, ``cdr``, ``conferences``).
Each file runs in its own transaction together with its ``schema_migrations`` row (version, name, SHA-256
of the file, applied_at), so a failing file leaves the database at the previous version. A per-database
advisory lock lets several nodes migrate at once: the later ones wait, then find nothing to apply.

Pending files are applied in version order, also one numbered below a version already applied (a file
from a parallel branch). Applied files are immutable: a changed checksum stops the run. Fix it by
restoring the file and adding the change as a new migration (``NNNN+1_….sql``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from storage.postgres.connect import connect, dsn_database, server_address
from storage.postgres.errors import DatabaseUnavailable, MigrationError
from storage.postgres.sql import queries_for

__all__ = [
    "MIGRATIONS_DIR",
    "DomainStatus",
    "Migration",
    "MigrationError",
    "MigrationReport",
    "MigrationStatus",
    "discover_migrations",
    "migrate",
    "migration_status",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MAINTENANCE_DATABASE = "postgres"

_SQL = queries_for("migrate")
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_$]{0,62}$")


@dataclass(frozen=True)
class Migration:
    domain: str
    version: int
    name: str
    path: Path
    sql: str
    checksum: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass
class MigrationReport:
    """What one ``migrate`` run did."""

    databases: dict[str, str] = field(default_factory=dict)  # domain -> database
    created_databases: list[str] = field(default_factory=list)
    applied: dict[str, list[str]] = field(default_factory=dict)  # domain -> labels applied now
    versions: dict[str, int] = field(default_factory=dict)  # domain -> version after the run

    @property
    def changed(self) -> bool:
        return bool(self.created_databases) or any(self.applied.values())

    def summary(self) -> str:
        lines = []
        for domain, database in self.databases.items():
            applied = self.applied.get(domain, [])
            created = " (created)" if database in self.created_databases else ""
            what = f"applied {', '.join(applied)}" if applied else "up to date"
            lines.append(f"{database}{created}: {what}, at version {self.versions.get(domain, 0):04d}")
        return "\n".join(lines)


@dataclass
class DomainStatus:
    domain: str
    database: str
    exists: bool
    applied: list[str]
    pending: list[str]
    changed: list[str]  # applied files whose checksum no longer matches
    unknown: list[str]  # versions applied in the database but absent from the files


@dataclass
class MigrationStatus:
    domains: dict[str, DomainStatus]

    @property
    def pending(self) -> dict[str, list[str]]:
        return {domain: status.pending for domain, status in self.domains.items()}

    @property
    def up_to_date(self) -> bool:
        return all(
            s.exists and not s.pending and not s.changed and not s.unknown for s in self.domains.values()
        )


def discover_migrations(domain: str, migrations_dir: Path | None = None) -> list[Migration]:
    """The migrations of ``domain`` in version order; a misnamed or duplicate file is a MigrationError."""
    directory = (migrations_dir or MIGRATIONS_DIR) / domain
    if not directory.is_dir():
        raise MigrationError(f"no migrations for domain {domain!r}: {directory} is not a directory")
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(
                f"{path}: a migration file must be named NNNN_lower_snake_name.sql (e.g. 0003_add_index.sql)"
            )
        version = int(match.group("version"))
        if version == 0:
            raise MigrationError(f"{path}: migration versions start at 0001")
        if version in migrations:
            raise MigrationError(
                f"{path}: version {version:04d} is also used by {migrations[version].path.name}"
            )
        data = path.read_bytes()
        try:
            sql = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise MigrationError(f"{path}: not UTF-8 ({error})") from None
        migrations[version] = Migration(
            domain=domain,
            version=version,
            name=match.group("name"),
            path=path,
            sql=sql,
            checksum=hashlib.sha256(data).hexdigest(),
        )
    return [migrations[v] for v in sorted(migrations)]


async def migrate(
    server_dsn: str,
    databases: Mapping[str, str],
    *,
    migrations_dir: Path | None = None,
) -> MigrationReport:
    """Create each missing domain database and apply its pending migrations (``{domain: database}``).

    Raises :class:`MigrationError` with a one-line message (unreachable server, changed or broken file).
    """
    plans = {domain: discover_migrations(domain, migrations_dir) for domain in databases}
    for database in databases.values():
        _check_database_name(database)
    report = MigrationReport(databases=dict(databases))
    report.created_databases = await _create_missing_databases(server_dsn, list(databases.values()))
    for domain, database in databases.items():
        applied_now, version = await _migrate_database(server_dsn, database, plans[domain])
        report.applied[domain] = applied_now
        report.versions[domain] = version
    return report


async def migration_status(
    server_dsn: str,
    databases: Mapping[str, str],
    *,
    migrations_dir: Path | None = None,
) -> MigrationStatus:
    """Applied and pending migrations per domain, without changing anything."""
    domains: dict[str, DomainStatus] = {}
    admin = await _connect(server_dsn, _maintenance_database(server_dsn))
    try:
        present = {
            name: bool(await admin.fetchval(_SQL["database_exists"], name)) for name in databases.values()
        }
    finally:
        await admin.close()
    for domain, database in databases.items():
        files = discover_migrations(domain, migrations_dir)
        if not present[database]:
            domains[domain] = DomainStatus(domain, database, False, [], [m.label for m in files], [], [])
            continue
        conn = await _connect(server_dsn, database)
        try:
            rows = []
            if await conn.fetchval(_SQL["schema_migrations_exists"]):
                rows = await conn.fetch(_SQL["applied_migrations"])
        finally:
            await conn.close()
        by_version = {m.version: m for m in files}
        applied_versions = {row["version"]: row for row in rows}
        domains[domain] = DomainStatus(
            domain=domain,
            database=database,
            exists=True,
            applied=[f"{row['version']:04d}_{row['name']}" for row in rows],
            pending=[m.label for m in files if m.version not in applied_versions],
            changed=[
                by_version[v].label
                for v, row in applied_versions.items()
                if v in by_version and by_version[v].checksum != row["checksum"]
            ],
            unknown=[f"{v:04d}_{row['name']}" for v, row in applied_versions.items() if v not in by_version],
        )
    return MigrationStatus(domains)


# ---- internals ----


def _check_database_name(database: str) -> None:
    if not _DATABASE_NAME.match(database):
        raise MigrationError(
            f"database name {database!r} is not a plain lower-case PostgreSQL identifier (letters, digits, _)"
        )


def _maintenance_database(server_dsn: str) -> str:
    return dsn_database(server_dsn) or MAINTENANCE_DATABASE


async def _connect(server_dsn: str, database: str) -> asyncpg.Connection:
    try:
        return await connect(server_dsn, database=database)
    except DatabaseUnavailable as error:
        raise MigrationError(str(error)) from error


async def _create_missing_databases(server_dsn: str, databases: list[str]) -> list[str]:
    admin = await _connect(server_dsn, _maintenance_database(server_dsn))
    created = []
    try:
        await admin.execute(_SQL["lock_database_creation"])
        try:
            for database in databases:
                if await admin.fetchval(_SQL["database_exists"], database):
                    continue
                statement = await admin.fetchval(_SQL["create_database_statement"], database)
                try:
                    await admin.execute(statement)
                except asyncpg.InsufficientPrivilegeError as error:
                    raise MigrationError(
                        f"cannot create database {database} at {server_address(server_dsn)} ({error}) — give "
                        f"the role CREATEDB (`ALTER ROLE … CREATEDB`) or create the database yourself"
                    ) from None
                except asyncpg.DuplicateDatabaseError:
                    continue  # made meanwhile by a node that does not take the lock (e.g. an older one)
                created.append(database)
        finally:
            await admin.execute(_SQL["unlock_database_creation"])
    finally:
        await admin.close()
    return created


async def _migrate_database(
    server_dsn: str, database: str, migrations: list[Migration]
) -> tuple[list[str], int]:
    conn = await _connect(server_dsn, database)
    try:
        await conn.execute(_SQL["lock_migrations"])
        try:
            await conn.execute(_SQL["create_schema_migrations"])
            applied = {row["version"]: row for row in await conn.fetch(_SQL["applied_migrations"])}
            _check_applied(database, migrations, applied)
            applied_now = []
            version = max(applied, default=0)
            for migration in migrations:
                if migration.version in applied:
                    continue
                await _apply(conn, database, migration, version)
                applied_now.append(migration.label)
                version = max(version, migration.version)
            return applied_now, version
        finally:
            await conn.execute(_SQL["unlock_migrations"])
    finally:
        await conn.close()


def _check_applied(database: str, migrations: list[Migration], applied: Mapping[int, asyncpg.Record]) -> None:
    by_version = {m.version: m for m in migrations}
    for version, row in sorted(applied.items()):
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"database {database} has migration {version:04d}_{row['name']} applied, which this uc-edge "
                "does not ship — run the uc-edge version that applied it (or newer)"
            )
        if migration.checksum != row["checksum"]:
            raise MigrationError(
                f"{migration.path}: changed after it was applied to {database} (applied checksum "
                f"{row['checksum']}, file checksum {migration.checksum}) — restore the file as applied and "
                "put the change in a new migration file with the next version number"
            )


async def _apply(conn: asyncpg.Connection, database: str, migration: Migration, previous: int) -> None:
    try:
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                _SQL["record_migration"], migration.version, migration.name, migration.checksum
            )
    except asyncpg.PostgresError as error:
        where = _error_line(migration.sql, error)
        raise MigrationError(
            f"{migration.path}{where}: PostgreSQL error: {_one_line(error)} — {database} stays at version "
            f"{previous:04d}; fix the file and run `uc-edge migrate` again"
        ) from None


def _error_line(sql: str, error: asyncpg.PostgresError) -> str:
    position = getattr(error, "position", None)
    if not position or not str(position).isdigit():
        return ""
    return f" line {sql.count(chr(10), 0, int(position) - 1) + 1}"


def _one_line(error: asyncpg.PostgresError) -> str:
    message = " ".join(str(error).split())
    sqlstate = getattr(error, "sqlstate", None)
    return f"{message} (SQLSTATE {sqlstate})" if sqlstate else message
