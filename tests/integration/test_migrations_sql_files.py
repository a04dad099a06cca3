"""The named-query loader and the shipped ``.sql`` files (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.postgres.migrate import discover_migrations
from storage.postgres.sql import SQL_DIR, SqlFileError, load_queries, parse_queries


def test_every_shipped_query_file_parses() -> None:
    files = sorted(SQL_DIR.glob("*.sql"))
    assert {f.stem for f in files} >= {"accounts", "calls", "cdr", "conferences", "migrate", "objects"}
    for path in files:
        queries = load_queries(path)
        assert len(queries) > 0
        for name, sql in queries.items():
            assert sql.strip(), (path.name, name)


def test_every_domain_ships_ordered_migrations_with_an_outbox() -> None:
    for domain in ("accounts", "calls", "cdr", "conferences"):
        migrations = discover_migrations(domain)
        assert [m.version for m in migrations] == sorted(m.version for m in migrations)
        assert any(
            "CREATE TABLE outbox" in m.sql and f"outbox_notify('{domain}')" in m.sql for m in migrations
        )


def test_parse_splits_named_queries_and_keeps_their_comments() -> None:
    queries = parse_queries(
        "-- file comment\n\n-- name: one\n-- $1 id\nSELECT $1;\n\n-- name: two\nSELECT 2;\n"
    )
    assert queries == {"one": "-- $1 id\nSELECT $1;", "two": "SELECT 2;"}


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("SELECT 1;", "no '-- name"),
        ("SELECT 0;\n-- name: one\nSELECT 1;", "before the first"),
        ("-- name: one\nSELECT 1;\n-- name: one\nSELECT 2;", "defined twice"),
        ("-- name: one\n-- only a comment\n-- name: two\nSELECT 2;", "'one' is empty"),
        ("-- name: Bad-Name\nSELECT 1;", "lower_snake_case"),
    ],
)
def test_malformed_files_are_refused(text: str, complaint: str) -> None:
    with pytest.raises(SqlFileError, match=complaint):
        parse_queries(text, "broken.sql")


def test_unknown_query_name_lists_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "q.sql"
    path.write_text("-- name: present\nSELECT 1;\n")
    with pytest.raises(KeyError, match=r"q\.sql has no query named 'absent' \(it has: present\)"):
        load_queries(path)["absent"]
