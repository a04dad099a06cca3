"""Errors of the PostgreSQL adapters, with messages that say what failed and how to fix it."""

from __future__ import annotations


class DatabaseUnavailable(Exception):
    """The PostgreSQL server cannot be reached, or refused the connection (address, auth, missing db)."""


class MigrationError(Exception):
    """Migrating a domain database failed; the message names the file or database and the fix."""
