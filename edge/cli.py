"""``uc-edge`` — the command line: serve, migrate, accounts, registrations, doctor, consume, bench.

Every command loads settings the same way (environment ``UC_EDGE_*`` over ``--config FILE`` over
defaults). A problem the operator can fix ends the command with one line on stderr saying what is wrong
and how to fix it, and exit status 2 (settings) or 1 (anything else); no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from edge.settings import Settings, SettingsError, load_settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_SETTINGS = 2

KAFKA_TOPICS = ("call-events", "cdr-events", "conf-events")


class CommandError(Exception):
    """An operator-fixable failure: the message is the one line printed."""


def _fail(message: str, status: int = EXIT_FAILED) -> int:
    print(f"uc-edge: {message}", file=sys.stderr)
    return status


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency, but keep the CLI usable without it
        return asyncio.run(coro)


# --- serve ----------------------------------------------------------------------------------------------


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from edge.server import serve

    return _run(serve(settings))


# --- migrate --------------------------------------------------------------------------------------------


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from storage.kafka.topics import ensure_topics
    from storage.postgres.migrate import MigrationError, migrate

    try:
        report = await migrate(
            settings.db_dsn, settings.domain_databases, migrations_dir=settings.migrations_dir
        )
    except MigrationError as exc:
        raise CommandError(str(exc)) from None
    print(report.summary() if hasattr(report, "summary") else report)
    if args.skip_kafka:
        return EXIT_OK
    try:
        created = await ensure_topics(
            settings.kafka_bootstrap, {t: settings.kafka_partitions for t in KAFKA_TOPICS}
        )
    except Exception as exc:
        raise CommandError(
            f"databases migrated, but Kafka topics could not be ensured at {settings.kafka_bootstrap}: {exc}"
            " — start Kafka (`scripts/services up`) or set UC_EDGE_KAFKA_BOOTSTRAP, then run migrate again"
        ) from None
    if created:
        print(f"kafka: created topics {', '.join(created)}")
    else:
        print(f"kafka: topics {', '.join(KAFKA_TOPICS)} present")
    return EXIT_OK


# --- accounts -------------------------------------------------------------------------------------------


async def _accounts(settings: Settings, args: argparse.Namespace) -> int:
    from storage.ports import AccountExists
    from storage.postgres.accounts import open_account_store
    from storage.postgres.errors import DatabaseUnavailable

    try:
        await _accounts_in(settings, args, open_account_store)
    except (AccountExists, ValueError) as exc:
        raise CommandError(str(exc)) from None
    except DatabaseUnavailable as exc:
        raise CommandError(f"{exc} — then run `uc-edge migrate`") from None
    return EXIT_OK


async def _accounts_in(settings: Settings, args: argparse.Namespace, open_account_store: Any) -> None:
    async with open_account_store(settings.database_dsn(settings.db_accounts)) as store:
        if args.accounts_command == "add":
            account = await store.add_sip_account(
                args.user, args.password, settings.sip_realm, email=args.email
            )
            print(f"added SIP user {args.user} (realm {settings.sip_realm}, account {account.account_id})")
        elif args.accounts_command == "list":
            accounts = await store.list_sip_accounts()
            if not accounts:
                print("no SIP users (add one with `uc-edge accounts add USER --password PASS`)")
            for item in accounts:
                print(f"{item.username}\t{item.realm}\t{item.account_id}\t{item.status}")
        elif args.accounts_command == "remove":
            if not await store.remove_sip_account(args.user, settings.sip_realm):
                raise CommandError(f"no SIP user {args.user!r} in realm {settings.sip_realm!r}")
            print(f"removed SIP user {args.user}")


# --- registrations --------------------------------------------------------------------------------------


async def _registrations(settings: Settings, args: argparse.Namespace) -> int:
    if args.trunks:
        return await _trunk_registrations(settings)
    import time

    import redis.asyncio as aioredis

    from storage.redis.location import RedisLocationStore

    client = aioredis.from_url(settings.redis_url)
    try:
        store = RedisLocationStore(client)
        aors = await store.list_aors(limit=args.limit)
        if not aors:
            print("no registrations")
        now = time.time()
        for aor in aors:
            for binding in await store.list_bindings(aor):
                remaining = int(binding.expires_at - now)
                via = (
                    f"{binding.received.transport}:{binding.received.host}:{binding.received.port}"
                    if binding.received
                    else "-"
                )
                agent = binding.user_agent or ""
                print(f"{aor}\t{binding.contact_uri}\texpires in {remaining}s\tfrom {via}\t{agent}")
    finally:
        await client.aclose()
    return EXIT_OK


async def _trunk_registrations(settings: Settings) -> int:
    """Our own registrations at trunks live in the running node, not in Redis: ask its control API."""
    import aiohttp

    from edge.trunk_registration import trunk_registration_lines

    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::", "") else settings.http_host
    url = f"http://{host}:{settings.http_port}/api/v1/node"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as response,
        ):
            if response.status != 200:
                raise CommandError(f"{url} answered {response.status}")
            info = await response.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CommandError(
            f"cannot reach the node at {url}: {exc or type(exc).__name__} — is it running?"
        ) from None
    for line in trunk_registration_lines(info.get("trunk_registrations", [])):
        print(line)
    return EXIT_OK


# --- doctor ---------------------------------------------------------------------------------------------


async def _doctor(settings: Settings, args: argparse.Namespace) -> int:
    from edge.doctor import run_doctor

    return await run_doctor(settings, KAFKA_TOPICS)


# --- consume --------------------------------------------------------------------------------------------


async def _consume(settings: Settings, args: argparse.Namespace) -> int:
    import signal

    from storage.consumers.billing import run_billing_consumer

    task = asyncio.ensure_future(
        run_billing_consumer(
            kafka_bootstrap=settings.kafka_bootstrap,
            cdr_dsn=settings.database_dsn(settings.db_cdr),
            redis_url=settings.redis_url,
            idempotency_ttl_seconds=settings.idempotency_ttl_hours * 3600.0,
        )
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    from storage.postgres.errors import DatabaseUnavailable

    try:
        await task
    except asyncio.CancelledError:
        print("billing consumer stopped", file=sys.stderr)
    except DatabaseUnavailable as exc:
        raise CommandError(f"{exc} — run `uc-edge migrate` first if the database is missing") from None
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return EXIT_OK


# --- parser ---------------------------------------------------------------------------------------------


def _async(fn: Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]) -> Any:
    def runner(settings: Settings, args: argparse.Namespace) -> int:
        return _run(fn(settings, args))

    return runner


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uc-edge",
        description="uc-edge — SIP/WebRTC media edge server. Settings come from UC_EDGE_* environment "
        "variables and an optional TOML file (--config or UC_EDGE_CONFIG); see README, Configuration.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (overridden by UC_EDGE_* env)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the server in the foreground",
        description="Run SIP (UDP/TCP, TLS when a certificate is set), SIP over WebSocket at /sip, and the "
        "HTTP API (/healthz, /readyz, /metrics). Stops cleanly on SIGINT/SIGTERM.",
    )
    serve.set_defaults(handler=cmd_serve)

    migrate = sub.add_parser(
        "migrate",
        help="create the domain databases, apply SQL migrations, create Kafka topics",
        description="Create uc_accounts, uc_calls, uc_cdr, uc_conferences when absent, apply pending "
        "versioned migrations (checksums recorded; re-running is a no-op; a changed applied migration is an "
        "error), and create the Kafka topics call-events, cdr-events, conf-events.",
    )
    migrate.add_argument("--skip-kafka", action="store_true", help="do not touch Kafka topics")
    migrate.set_defaults(handler=_async(_migrate))

    accounts = sub.add_parser(
        "accounts",
        help="manage SIP users (digest credentials)",
        description="SIP users for digest authentication. Only HA1 digests (MD5, SHA-256) and a scrypt "
        "hash are stored, never the plain password.",
    )
    acc_sub = accounts.add_subparsers(dest="accounts_command", metavar="ACTION", required=True)
    add = acc_sub.add_parser(
        "add", help="add a SIP user", description="Add a SIP user in the configured realm."
    )
    add.add_argument("user", help="SIP user name (the user part of sip:USER@domain)")
    add.add_argument("--password", required=True, help="the user's SIP password")
    add.add_argument("--email", help="contact e-mail stored on the account")
    acc_sub.add_parser("list", help="list SIP users", description="List SIP users of every realm.")
    remove = acc_sub.add_parser(
        "remove", help="remove a SIP user", description="Remove a SIP user's credentials."
    )
    remove.add_argument("user")
    accounts.set_defaults(handler=_async(_accounts))

    registrations = sub.add_parser(
        "registrations",
        help="list current SIP registrations",
        description="List the registrar's current bindings (from Redis), with time to expiry.",
    )
    registrations.add_argument(
        "--limit", type=int, default=1000, help="at most this many AORs (default 1000)"
    )
    registrations.add_argument(
        "--trunks",
        action="store_true",
        help="list this node's own registrations at trunks instead (asks the running node's API)",
    )
    registrations.set_defaults(handler=_async(_registrations))

    doctor = sub.add_parser(
        "doctor",
        help="check every dependency and say how to fix what is wrong",
        description="Check settings, PostgreSQL (databases, migrations), Redis, Kafka (topics), S3 (bucket), "
        "libopus and the listening ports; print one line per check and how to fix failures. Exit 1 when "
        "anything is wrong.",
    )
    doctor.set_defaults(handler=_async(_doctor))

    consume = sub.add_parser(
        "consume",
        help="run an event consumer",
        description="Run a Kafka consumer in the foreground. `billing` applies cdr-events to account "
        "balances exactly once (deduplicated by event id).",
    )
    consume.add_argument("consumer", choices=["billing"])
    consume.set_defaults(handler=_async(_consume))

    bench = sub.add_parser(
        "bench",
        help="run a benchmark suite (see `uc-edge bench list`)",
        description="Benchmarks: `uc-edge bench list`, `uc-edge bench run SUITE [--quick]`. Results go to "
        "bench/results/ as JSON and PNG.",
        add_help=False,
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)  # parsed by bench.cli (see main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # The bench CLI owns its own arguments (including --help); it needs no server settings.
        from bench.cli import main as bench_main

        return bench_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        return _fail(str(exc), EXIT_BAD_SETTINGS)
    from edge.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        return int(args.handler(settings, args))
    except CommandError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `uc-edge registrations | head`: the reader left, nothing is wrong
        sys.stdout = open(os.devnull, "w")  # interpreter shutdown must not write
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
