"""The relay's pool asks PostgreSQL to plan every statement per run, without JIT, through its DSN."""

from __future__ import annotations

import pytest

from storage.kafka.relay import RELAY_SERVER_SETTINGS, with_server_settings


def test_relay_statements_are_never_frozen_into_a_generic_plan_nor_jit_compiled() -> None:
    assert RELAY_SERVER_SETTINGS == {"plan_cache_mode": "force_custom_plan", "jit": "off"}


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "postgresql://u:p@db:5432/uc_calls",
            "postgresql://u:p@db:5432/uc_calls?plan_cache_mode=force_custom_plan&jit=off",
        ),
        (
            "postgresql://u@db/uc_calls?sslmode=require",
            "postgresql://u@db/uc_calls?sslmode=require&plan_cache_mode=force_custom_plan&jit=off",
        ),
        (
            "postgresql:///uc_calls?host=/var/run/postgresql",
            "postgresql:///uc_calls?host=/var/run/postgresql&plan_cache_mode=force_custom_plan&jit=off",
        ),
    ],
)
def test_settings_are_added_as_query_parameters_keeping_the_dsn(dsn: str, expected: str) -> None:
    assert with_server_settings(dsn, RELAY_SERVER_SETTINGS) == expected


def test_a_setting_the_dsn_names_is_left_alone() -> None:
    dsn = "postgresql://db/uc_calls?plan_cache_mode=auto&jit=on"
    assert with_server_settings(dsn, RELAY_SERVER_SETTINGS) == dsn
