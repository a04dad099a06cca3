"""Named SQL queries read from ``.sql`` files — the only way PostgreSQL adapters get their SQL.

A file holds queries separated by ``-- name: <query_name>`` lines; the comment lines right after the name
document the query (parameters, guarantees) and are kept in the text sent to the server.

    queries = load_queries(Path(__file__).with_name("sql") / "accounts.sql")
    await conn.fetchrow(queries["insert_account"], email, password_hash)

Queries are looked up by name; a missing name raises ``KeyError`` naming the file and the known names, so a
typo fails at the first call instead of sending the wrong statement.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path

_NAME_LINE = re.compile(r"^--\s*name:\s*(?P<name>\S+)\s*$", re.MULTILINE)
_VALID_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

SQL_DIR = Path(__file__).resolve().parent / "sql"


class SqlFileError(ValueError):
    """A ``.sql`` file of named queries is malformed (no names, a bad or duplicate name, an empty query)."""


class NamedQueries(Mapping[str, str]):
    """Read-only ``{name: sql}`` of one file, with an error naming the file for unknown names."""

    def __init__(self, path: Path, queries: dict[str, str]) -> None:
        self.path = path
        self._queries = queries

    def __getitem__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            known = ", ".join(sorted(self._queries))
            raise KeyError(f"{self.path.name} has no query named {name!r} (it has: {known})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._queries)

    def __len__(self) -> int:
        return len(self._queries)


def parse_queries(text: str, source: str = "<sql>") -> dict[str, str]:
    """Split ``text`` at ``-- name:`` lines into ``{name: sql}``; raises :class:`SqlFileError`."""
    matches = list(_NAME_LINE.finditer(text))
    if not matches:
        raise SqlFileError(f"{source}: no '-- name: <query>' line")
    if text[: matches[0].start()].strip() and not _only_comments(text[: matches[0].start()]):
        raise SqlFileError(f"{source}: SQL before the first '-- name:' line would be ignored")
    queries: dict[str, str] = {}
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        name = match.group("name")
        if not _VALID_NAME.match(name):
            raise SqlFileError(f"{source}: query name {name!r} must be lower_snake_case")
        if name in queries:
            raise SqlFileError(f"{source}: query {name!r} is defined twice")
        body = text[match.end() : following.start() if following else len(text)].strip()
        if _only_comments(body):
            raise SqlFileError(f"{source}: query {name!r} is empty")
        queries[name] = body
    return queries


@cache
def load_queries(path: Path) -> NamedQueries:
    """The named queries of ``path`` (read once per process)."""
    return NamedQueries(path, parse_queries(path.read_text(encoding="utf-8"), str(path)))


def queries_for(adapter: str) -> NamedQueries:
    """The queries of ``storage/postgres/sql/<adapter>.sql``."""
    return load_queries(SQL_DIR / f"{adapter}.sql")


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())
