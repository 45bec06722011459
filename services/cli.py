"""`dealreg`: run the registry, manage API keys, load the demo scenario."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from services.shared.api_keys import ApiKeyStore, Role
from services.shared.database import DependencyUnavailable, check_reachable, create_sql_engine
from services.shared.settings import Settings, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None) is not None:
        overrides["data_dir"] = Path(args.data_dir)
    return load_settings(overrides)


def _key_store(settings: Settings) -> ApiKeyStore:
    if settings.uses_sqlite_files():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_sql_engine(settings.registry_tables_url())
    check_reachable(engine, "the registry database")
    store = ApiKeyStore(engine)
    store.create_schema()
    return store


def _serve(app: Any, args: argparse.Namespace, what: str) -> int:
    import uvicorn

    print(f"{what} on http://{args.host}:{args.port} (docs at /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None)
    return 0


def _service_settings(args: argparse.Namespace) -> Settings:
    from services.shared.log_setup import configure_logging

    settings = _settings(args)
    configure_logging(settings.log_level)
    return settings


def cmd_registry(args: argparse.Namespace) -> int:
    from services.registry.service import create_registry_app

    return _serve(create_registry_app(_service_settings(args)), args, "Registry write API")


def cmd_relay(args: argparse.Namespace) -> int:
    from services.registry.relay.service import create_relay_app

    return _serve(create_relay_app(_service_settings(args)), args, "Relay")


def cmd_projections(args: argparse.Namespace) -> int:
    from services.projections.service import create_projection_app

    return _serve(create_projection_app(_service_settings(args)), args, "Projections read API")


def cmd_up(args: argparse.Namespace) -> int:
    from services.embedded.app import create_embedded_app

    settings = _service_settings(args)
    keys = _key_store(settings)
    if keys.count() == 0:
        print("New registry: one API key per role (shown once, store them now):")
        for role in Role:
            print(f"  {role.value:8} {keys.create(f'initial-{role.value}', role)}")
        sys.stdout.flush()
    return _serve(create_embedded_app(settings), args, "Deal Registry")


def cmd_keys_create(args: argparse.Namespace) -> int:
    keys = _key_store(_settings(args))
    if keys.name_taken(args.name):
        print(f"error: a key named {args.name!r} exists already", file=sys.stderr)
        return 2
    key = keys.create(args.name, Role(args.role))
    print(f"created {args.role} key {args.name!r}; it is shown only once:")
    print(key)
    return 0


def cmd_topics_create(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from services.shared.kafka_topics import create_topics

    settings = load_settings()
    try:
        created = create_topics(settings.kafka_bootstrap, settings.kafka_topic,
                                settings.dead_letter_topic(), args.partitions, args.replication)
    except KafkaError as exc:
        raise DependencyUnavailable(
            f"the Kafka broker at {settings.kafka_bootstrap} is unreachable: {exc}"
        ) from exc
    for name in created:
        print(f"created {name}")
    if not created:
        print("topics exist already")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from services.demo.client import DemoFailed, run_demo

    try:
        summary = run_demo(args.url, args.api_key)
    except DemoFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"recorded {summary['events']} events; log position {summary['last_position']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dealreg", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the embedded registry (write + read API)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--data-dir", help="folder for SQLite files (DEALREG_DATA_DIR)")
    up.set_defaults(run=cmd_up)

    for name, run, port, what in (
        ("registry", cmd_registry, 8001, "distributed mode: the write API alone"),
        ("relay", cmd_relay, 8002, "distributed mode: publish the event log to Kafka"),
        ("projections", cmd_projections, 8003,
         "distributed mode: consume from Kafka into the read models, serve the read API"),
    ):
        service = commands.add_parser(name, help=what, description=f"{what}. Configured by "
                                      "DEALREG_* environment variables (see the README).")
        service.add_argument("--host", default="127.0.0.1")
        service.add_argument("--port", type=int, default=port)
        service.set_defaults(run=run)

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key; prints it on the last line")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--name", required=True, help="the principal recorded on its events")
    create.add_argument("--data-dir", help="folder for SQLite files (DEALREG_DATA_DIR)")
    create.set_defaults(run=cmd_keys_create)

    topics = commands.add_parser("topics", help="manage the Kafka topics")
    topic_commands = topics.add_subparsers(dest="topics_command", required=True)
    create_topics = topic_commands.add_parser(
        "create", help="create DEALREG_KAFKA_TOPIC and its dead-letter topic")
    create_topics.add_argument("--partitions", type=int, default=12,
                               help="the most projection instances that can share the work")
    create_topics.add_argument("--replication", type=int, default=1)
    create_topics.set_defaults(run=cmd_topics_create)

    demo = commands.add_parser("demo", help="record the article's scenario through the HTTP API")
    demo.add_argument("--url", default="http://127.0.0.1:8000")
    demo.add_argument("--api-key", required=True, help="a partner key")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except DependencyUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one line for the operator; details in the log
        if type(exc).__module__.startswith(("psycopg", "eventsourcing", "sqlite3")):
            print(f"error: storage unavailable: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
