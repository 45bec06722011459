"""`dealreg`: run the registry, manage API keys, load the demo scenario, audit the log."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from services.shared.api_keys import (
    DEFAULT_GRACE,
    ApiKeyStore,
    KeyRecord,
    KeyRefused,
    Role,
    cli_actor,
)
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
    from services.shared.http_server import serve, settle_collector

    print(f"{what} on http://{args.host}:{args.port} (docs at /docs)", flush=True)
    settle_collector()
    serve(app, args.host, args.port)
    return 0


def _serve_workers(factory: str, args: argparse.Namespace, what: str) -> int:
    from services.shared.http_server import serve_workers

    print(f"{what} on http://{args.host}:{args.port}, {args.workers} worker processes "
          "(docs at /docs)", flush=True)
    return serve_workers(factory, args.host, args.port, args.workers)


def worker_count(text: str) -> int:
    """`--workers`: an argparse type, a whole number of processes from 1."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number of processes, not {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"at least 1 process, not {count}")
    return count


def _service_settings(args: argparse.Namespace) -> Settings:
    from services.shared.log_setup import configure_logging

    settings = _settings(args)
    configure_logging(settings.log_level)
    return settings


def cmd_registry(args: argparse.Namespace) -> int:
    settings = _service_settings(args)
    if args.workers > 1:
        # Each worker reads the same DEALREG_* environment (services.worker_apps).
        return _serve_workers("services.worker_apps:registry_app", args, "Registry write API")
    from services.registry.service import create_registry_app

    return _serve(create_registry_app(settings), args, "Registry write API")


def cmd_relay(args: argparse.Namespace) -> int:
    from services.registry.relay.service import create_relay_app

    return _serve(create_relay_app(_service_settings(args)), args, "Relay")


def cmd_relay_republish(args: argparse.Namespace) -> int:
    """Begin a new epoch: the leading relay publishes the whole log again, and every
    projection instance reads its partitions again from their start (nothing counts twice:
    an aggregate's version applied once is never applied again)."""
    from services.registry.relay.published_position import PublishedPosition

    settings = _settings(args)
    engine = create_sql_engine(settings.registry_tables_url())
    check_reachable(engine, "the registry database")
    published = PublishedPosition(engine, settings.kafka_topic)
    published.create_schema()
    epoch = published.start_epoch()
    print(f"epoch {epoch}: the leading relay publishes {settings.kafka_topic} again from "
          "position 1; the projections read it again from the start of each partition")
    return 0


def cmd_projections(args: argparse.Namespace) -> int:
    settings = _service_settings(args)
    if args.workers > 1:
        return _serve_workers("services.worker_apps:projections_app", args,
                              "Projections read API")
    from services.projections.service import create_projection_app

    return _serve(create_projection_app(settings), args, "Projections read API")


def _rebuild_feed(args: argparse.Namespace, settings: Settings, live: Any) -> Any:
    """The feed of `--source`; `auto` reads the topic when the live read model is fed
    from Kafka, else the registry's log."""
    from services.projections.read_model.progress import offsets_by_source
    from services.projections.rebuild.feeds import KafkaFeed
    from services.projections.service import consumer_config
    from services.registry.adapters.event_store import open_event_store

    source = args.source
    if source == "auto":
        with live.connect() as conn:
            fed_from = set(offsets_by_source(conn))
        source = "kafka" if settings.kafka_topic in fed_from else "log"
    if source == "kafka":
        return KafkaFeed(consumer_config(settings))
    from services.embedded.projection_feed import log_rebuild_feed

    if settings.database_url is None and not (settings.data_dir / "events.db").exists():
        raise DependencyUnavailable(f"no event store in {settings.data_dir} (events.db)")
    store = open_event_store(settings)
    return log_rebuild_feed(store, page_size=args.page_size, close=store.close)


def cmd_projections_rebuild(args: argparse.Namespace) -> int:
    from services.projections.read_model.tables import READ_MODEL_VERSION
    from services.projections.rebuild.feeds import RebuildFailed
    from services.projections.rebuild.progress_bar import RebuildProgress
    from services.projections.rebuild.rebuild import rebuild_read_model

    if args.version is not None and args.version != READ_MODEL_VERSION:
        print(f"error: this code builds read-model version {READ_MODEL_VERSION}, not "
              f"{args.version}: run `dealreg projections rebuild --version {args.version}` "
              f"with the code of version {args.version}", file=sys.stderr)
        return 2
    settings = _settings(args)
    live = create_sql_engine(settings.read_model_url())
    check_reachable(live, "the read-model database")
    feed = _rebuild_feed(args, settings, live)
    try:
        # Asking for the code's version by name is what allows going back to it from a
        # newer read model; without --version a newer one is refused.
        report = rebuild_read_model(live, feed, RebuildProgress(sys.stderr),
                                    dry_run=args.dry_run, downgrade=args.version is not None)
    except RebuildFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        feed.close()
        live.dispose()
    print(f"rebuilt from {report.source}: {report.events:,} events ({report.entries:,} "
          f"entries read) to position {report.position} in {report.applying_seconds:.1f} s, "
          f"{report.events_per_second:,.0f} events/s; {report.total_seconds:.1f} s in all")
    if report.live_version != report.version:
        print(f"read-model version {report.version}; the live read model was version "
              f"{report.live_version}")
    print(f"{'table':22} {'live checksum':64}  {'rebuilt checksum':64}")
    for table in report.tables:
        print(f"{table.table:22} {table.live or '-':64}  {table.rebuilt}  {table.verdict}")
    done = (f"switched to the rebuilt tables, version {report.version} (the live projector "
            f"waited {report.held_seconds:.1f} s)") if report.switched \
        else "dry run: nothing switched"
    reshaped = (f"; {', '.join(report.reshaped)} changed shape (version "
                f"{report.live_version} to {report.version}), not compared") \
        if report.reshaped else ""
    if report.changed_by_upgrade:
        reshaped += (f"; {', '.join(report.changed_by_upgrade)} differ under version "
                     f"{report.version}'s rules (expected in an upgrade)")
    if report.mismatched:
        print(f"MISMATCH in {', '.join(report.mismatched)}{reshaped}; {done}",
              file=sys.stderr)
        return 1
    compared = len(report.tables) - len(report.reshaped) - len(report.changed_by_upgrade)
    print(f"all {compared} compared tables equal{reshaped}; {done}" if reshaped
          else f"all {len(report.tables)} tables equal; {done}")
    return 0


def _parked_projector(args: argparse.Namespace) -> Any:
    """The live read model's projector, for its parked events (embedded: --data-dir;
    distributed: DEALREG_READ_DATABASE_URL, else DEALREG_DATABASE_URL)."""
    from sqlalchemy import inspect

    from services.projections.projectors.read_model_projector import ReadModelProjector
    from services.projections.read_model.tables import parked_events

    settings = _settings(args)
    if settings.read_database_url is None and settings.database_url is None \
            and not (settings.data_dir / "read.db").exists():
        raise DependencyUnavailable(f"no read model in {settings.data_dir} (read.db)")
    engine = create_sql_engine(settings.read_model_url())
    check_reachable(engine, "the read-model database")
    if not inspect(engine).has_table(parked_events.name):
        raise DependencyUnavailable(
            "the read model has no table of parked events: start its service once")
    return ReadModelProjector(engine)


def cmd_projections_parked_list(args: argparse.Namespace) -> int:
    from services.projections.query_api.parked_routes import ParkedEventView
    from services.projections.read_model.tables import ParkedState

    projector = _parked_projector(args)
    try:
        page = projector.parked.page(limit=args.limit, offset=args.offset)
    finally:
        projector.engine.dispose()
    if args.json:
        import json

        print(json.dumps([ParkedEventView.of(e).model_dump(mode="json") for e in page.items],
                         indent=2))
        return 0
    for event in page.items:
        print(event.describe())
    failed = sum(1 for e in page.items if e.state is ParkedState.FAILED)
    shown = f"; showing {len(page.items)} from {args.offset}" \
        if len(page.items) < page.total else ""
    print(f"{page.total} parked events{shown}" + (
        f" ({failed} failed, {len(page.items) - failed} waiting behind them)"
        if page.items else ""))
    return 0


def cmd_projections_parked_retry(args: argparse.Namespace) -> int:
    from services.projections.query_api.parked_routes import retry_report

    projector = _parked_projector(args)
    store = None
    try:
        if args.id is not None and projector.parked.get(args.id) is None:
            print(f"error: no parked event {args.id}", file=sys.stderr)
            return 2
        reread = None
        settings = _settings(args)
        if settings.database_url is not None or (settings.data_dir / "events.db").exists():
            # The log is at hand: an event parked because it could not be translated is
            # read and translated again, so a fixed translation applies it.
            from services.embedded.projection_feed import reread_from_log
            from services.registry.adapters.event_store import open_event_store

            store = open_event_store(settings)
            reread = reread_from_log(store)
        outcomes = projector.retry_parked(args.id, reread)
    finally:
        if store is not None:
            store.close()
        projector.engine.dispose()
    report = retry_report(outcomes)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        for outcome in outcomes:
            event = outcome.event
            what = f"#{event.id} (position {event.position or '-'}, aggregate " \
                f"{event.aggregate_id or '-'} version {event.aggregate_version or '-'})"
            print(f"applied {what}" if outcome.applied
                  else f"still parked {what}: {outcome.reason}")
        print(f"retried {len(outcomes)} parked events: {report.applied} applied, "
              f"{report.still_parked} still parked")
    return 0 if report.still_parked == 0 else 1


def cmd_up(args: argparse.Namespace) -> int:
    from services.embedded.app import create_embedded_app

    if args.workers != 1:
        print("error: dealreg up is one process (its projection feed runs inside it, beside "
              "one SQLite writer); for several, run the distributed mode: dealreg registry "
              "--workers N and dealreg projections --workers N", file=sys.stderr)
        return 2
    settings = _service_settings(args)
    keys = _key_store(settings)
    if keys.count() == 0:
        print("New registry: one API key per role (shown once, store them now):")
        for role in Role:
            key = keys.create(f"initial-{role.value}", role, actor=cli_actor())
            print(f"  {role.value:8} {key}")
        sys.stdout.flush()
    return _serve(create_embedded_app(settings), args, "Deal Registry")


DURATION = re.compile(r"(0|[1-9][0-9]{0,5})([smhd])")
DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration(text: str) -> timedelta:
    """`30d`, `12h`, `15m`, `90s`: an argparse type."""
    matched = DURATION.fullmatch(text.strip())
    if matched is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30d, 12h or 15m")
    return timedelta(**{DURATION_UNITS[matched[2]]: int(matched[1])})


def expiry(text: str) -> datetime:
    """`--expires`: a date (the key stops at its start, UTC) or a duration from now."""
    try:
        return datetime.combine(date.fromisoformat(text.strip()), datetime.min.time(), UTC)
    except ValueError:
        pass
    try:
        return datetime.now(UTC) + duration(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a date (2026-12-31) nor a duration (30d)") from None


def _key_change(change: Any) -> Any:
    """Run a key store change; None (after saying why on stderr) if the store refused it."""
    try:
        return change()
    except KeyRefused as refused:
        print(f"error: {refused.message} ({refused.field}: {refused.rule})", file=sys.stderr)
        return None


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.isoformat(timespec="seconds")


def cmd_keys_create(args: argparse.Namespace) -> int:
    keys = _key_store(_settings(args))
    key = _key_change(lambda: keys.create(args.name, Role(args.role), args.firm or (),
                                          args.expires, actor=cli_actor()))
    if key is None:
        return 2
    record = keys.key(args.name)
    bound = f" for {', '.join(record.firms)}" if record.firms else ""
    until = f", expires {_when(record.expires_at)}" if record.expires_at else ""
    print(f"created {args.role} key {args.name!r}{bound}{until}; it is shown only once:")
    print(key)
    return 0


def _listed(record: KeyRecord, now: datetime) -> dict[str, Any]:
    listed = record.as_dict(now)
    return {name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in listed.items()}


def cmd_keys_list(args: argparse.Namespace) -> int:
    keys = _key_store(_settings(args))
    now = datetime.now(UTC)
    records, _ = keys.keys(limit=10**9, offset=0)
    if args.json:
        print(json.dumps([_listed(record, now) for record in records], indent=2))
        return 0
    print(f"{'name':24} {'role':8} {'state':8} {'created':25} {'expires':25} "
          f"{'last used':25} firms")
    for record in records:
        print(f"{record.name:24} {record.role.value:8} {record.state(now).value:8} "
              f"{_when(record.created_at):25} {_when(record.expires_at):25} "
              f"{_when(record.last_used_at):25} {','.join(record.firms) or '-'}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    keys = _key_store(_settings(args))
    record = _key_change(lambda: keys.revoke(args.name, actor=cli_actor()))
    if record is None:
        return 2
    print(f"revoked key {args.name!r}: every instance refuses it within "
          f"{keys.cache_seconds:g} s")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    keys = _key_store(_settings(args))
    key = _key_change(lambda: keys.rotate(args.name, cli_actor(), args.grace, args.expires))
    if key is None:
        return 2
    record = keys.key(args.name)
    print(f"rotated key {args.name!r}; the old key works until "
          f"{_when(record.previous_valid_until)}. The new key is shown only once:")
    print(key)
    return 0


def cmd_keys_bind(args: argparse.Namespace) -> int:
    keys = _key_store(_settings(args))
    record = _key_change(lambda: keys.bind_firms(args.name, args.firm or (), actor=cli_actor()))
    if record is None:
        return 2
    print(f"key {args.name!r} speaks for {', '.join(record.firms) or 'no firm'}")
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
        summary = run_demo(args.url, args.api_key, history=args.history)
    except DemoFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.history:
        print(f"history: {summary['history_events']} events, {summary['history_recorded']} new, "
              f"{summary['history_replayed']} already recorded (illustrative: fictional firms)")
    print(f"recorded {summary['events']} events; log position {summary['last_position']}")
    return 0


def _audit_stores(args: argparse.Namespace) -> tuple[Any, Any]:
    from services.registry.adapters.event_store import open_event_store
    from services.registry.audit.checkpoints import CheckpointStore, audit_database_url

    settings = _settings(args)
    if settings.database_url is None and not (settings.data_dir / "events.db").exists():
        raise DependencyUnavailable(f"no event store in {settings.data_dir} (events.db)")
    engine = create_sql_engine(audit_database_url(settings))
    check_reachable(engine, "the event store database")
    checkpoints = CheckpointStore(engine)
    checkpoints.create_schema()
    return open_event_store(settings), checkpoints


def _show_progress(phase: str, checked: int, head: int) -> None:
    print(f"{phase}: {checked} of about {head} events", file=sys.stderr, flush=True)


def _signer_or_none(settings: Settings) -> Any:
    """The tree-head signer, where this machine has the key; None where it does not (an
    auditor's machine), in which case signatures are checked with --public-key."""
    from services.registry.audit.signing import SigningKeyMissing
    from services.registry.audit.tree_head_key import tree_head_signer

    try:
        return tree_head_signer(settings)
    except SigningKeyMissing:
        return None


def _public_key(args: argparse.Namespace, settings: Settings) -> Any:
    from services.registry.audit.signing import load_public_key

    if getattr(args, "public_key", None):
        try:
            return load_public_key(Path(args.public_key).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DependencyUnavailable(f"cannot read the public key {args.public_key}: "
                                        f"{exc}") from None
    signer = _signer_or_none(settings)
    return None if signer is None else signer.public_key


def cmd_audit_verify(args: argparse.Namespace) -> int:
    import json

    from services.registry.audit.verification import verify_log

    store, checkpoints = _audit_stores(args)
    public_key = _public_key(args, _settings(args))
    report = verify_log(store, checkpoints, progress=_show_progress, public_key=public_key)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    for formats in report.leaf_formats:
        print(f"positions {formats['from']}-{formats['to']}: leaf format {formats['format']} "
              f"({formats['meaning']})", file=sys.stderr)
    signatures = ("signatures checked" if report.signatures_checked else
                  "signatures NOT checked: no key here, pass --public-key")
    summary = (f"{report.events_checked} events in {report.aggregates} aggregates, "
               f"{report.checkpoints_checked} checkpoints ({report.signed_heads} signed, "
               f"{signatures}; {report.unsigned_heads} unsigned from before signing), "
               f"covered to position {report.covered_position}")
    first = report.first_failure
    if first is None:
        print(f"OK: {summary}")
        return 0
    more = "+" if report.more_failures else ""
    print(f"FAILED at position {first.position} (aggregate {first.aggregate_id or '-'} "
          f"version {first.version}): {first.kind}: {first.detail}\n"
          f"{len(report.failures)}{more} failures; {summary}", file=sys.stderr)
    return 1


def _signer(settings: Settings) -> Any:
    from services.registry.audit.tree_head_key import tree_head_signer

    return tree_head_signer(settings)


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    from services.registry.audit.checkpoints import take_checkpoint

    store, checkpoints = _audit_stores(args)
    taken = take_checkpoint(store, checkpoints, _signer(_settings(args)))
    print(f"checkpoint {taken.id}: {taken.event_count} events to position "
          f"{taken.last_position}, root {taken.root}, at {taken.created_at.isoformat()}")
    return 0


def cmd_audit_tree_head(args: argparse.Namespace) -> int:
    import json

    from services.registry.audit.checkpoints import extend_tree

    store, checkpoints = _audit_stores(args)
    signer = _signer(_settings(args))
    extend_tree(store, checkpoints, signer)
    latest = checkpoints.latest()
    head = None if latest is None else latest.signed_head()
    if head is None:
        from services.registry.audit.checkpoints import take_checkpoint

        head = take_checkpoint(store, checkpoints, signer).signed_head()
    assert head is not None  # every head recorded now is signed
    print(json.dumps(head.as_dict(), indent=2))
    return 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    from services.registry.audit.export import ExportRefused, export_events

    store, checkpoints = _audit_stores(args)
    signer = _signer_or_none(_settings(args))
    try:
        if args.output == "-":
            written = export_events(store, checkpoints, args.first, args.last, sys.stdout,
                                    proofs=args.proofs, signer=signer)
        else:
            with open(args.output, "w", encoding="utf-8") as out:
                written = export_events(store, checkpoints, args.first, args.last, out,
                                        proofs=args.proofs, signer=signer)
    except ExportRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {written} events to {args.output}", file=sys.stderr)
    return 0


def _public_key_file(path: str | None) -> Any:
    from services.registry.audit.signing import load_public_key

    if path is None:
        return None
    try:
        return load_public_key(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DependencyUnavailable(f"cannot read the public key {path}: {exc}") from None


def cmd_audit_verify_export(args: argparse.Namespace) -> int:
    from services.registry.audit.export import verify_export

    public_key = _public_key_file(args.public_key)
    try:
        with open(args.file, encoding="utf-8") as lines:
            check = verify_export(lines, public_key)
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    if check.ok:
        print(f"OK: {check.events} events rebuild the signed root; {check.message}")
        return 0
    print(f"FAILED at line {check.line}: {check.message}", file=sys.stderr)
    return 1


def cmd_audit_verify_consistency(args: argparse.Namespace) -> int:
    import json

    from services.registry.audit import consistency_check
    from services.registry.audit.signing import SignedTreeHead

    try:
        kept = SignedTreeHead.from_dict(json.loads(Path(args.head).read_text(encoding="utf-8")))
    except OSError as exc:
        print(f"error: cannot read {args.head}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {args.head} is not a signed tree head: {exc}", file=sys.stderr)
        return 2
    if args.url:
        api_key = args.api_key or os.environ.get("DEALREG_API_KEY")
        if not api_key:
            print("error: --url needs --api-key (or DEALREG_API_KEY)", file=sys.stderr)
            return 2
        check = consistency_check.against_service(args.url, api_key, kept,
                                                  _public_key_file(args.public_key))
    else:
        settings = _settings(args)
        public_key = _public_key(args, settings)
        if public_key is None:
            print("error: no key here to check signatures with: pass --public-key",
                  file=sys.stderr)
            return 2
        store, checkpoints = _audit_stores(args)
        check = consistency_check.against_log(
            store, checkpoints, kept, public_key,
            progress=lambda done, head: _show_progress("recomputing leaves", done, head))
    if check.ok:
        print(f"OK: {check.message}")
        return 0
    print(f"FAILED: {check.message}", file=sys.stderr)
    return 1


def cmd_audit_new_signing_key(args: argparse.Namespace) -> int:
    from services.registry.audit.signing import key_id, key_seed, public_key_pem, write_new_key

    out = Path(args.out)
    if out.exists():
        print(f"error: {out} exists; a signing key is never overwritten", file=sys.stderr)
        return 2
    key = write_new_key(out)
    print(f"wrote {out} (mode 0600); key id {key_id(key.public_key())}", file=sys.stderr)
    if args.env_file:
        with open(args.env_file, "a", encoding="utf-8") as env_file:
            env_file.write(f"DEALREG_SIGNING_KEY={key_seed(key)}\n")
        print(f"appended DEALREG_SIGNING_KEY to {args.env_file}", file=sys.stderr)
    print(public_key_pem(key), end="")
    return 0


def _add_parked(actions: Any) -> None:
    parked = actions.add_parser(
        "parked", help="events the read model could not apply: list, retry after a fix",
        description="Events the read model could not apply are parked with their reason; "
        "the later events of their aggregate wait behind them. Works in both modes: "
        "--data-dir for embedded mode, the DEALREG_* settings for distributed mode.")
    parked_commands = parked.add_subparsers(dest="parked_command", required=True)
    listing = parked_commands.add_parser(
        "list", help="list parked events, oldest first; exit 0",
        description="List parked events, oldest first, one line each: id, state (failed, "
        "or waiting behind a failed one), position, source offset, type, aggregate, reason. "
        "Exit 0; 2 if the read model cannot be reached.")
    listing.add_argument("--limit", type=int, default=500)
    listing.add_argument("--offset", type=int, default=0)
    listing.add_argument("--json", action="store_true", help="print the events as JSON")
    listing.set_defaults(run=cmd_projections_parked_list)
    retry = parked_commands.add_parser(
        "retry", help="re-apply parked events after a fix; exit 1 if any stay parked",
        description="Re-apply the parked events of one aggregate (that of event ID) or of "
        "all, in version order, through the live projector's path and lock (safe while the "
        "service runs). Applied events leave the list; one that fails again stays, with the "
        "new reason, and its aggregate's later events keep waiting. Exit 0 if every retried "
        "event was applied, 1 if some stay parked, 2 if ID is unknown or the read model "
        "cannot be reached.")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", type=int, help="a parked event's id (from list)")
    which.add_argument("--all", action="store_true", help="every parked event")
    retry.add_argument("--json", action="store_true", help="print the outcome as JSON")
    retry.set_defaults(run=cmd_projections_parked_retry)
    for command in (listing, retry):
        command.add_argument("--data-dir", help="folder for SQLite files (DEALREG_DATA_DIR)")


def _add_rebuild(projections: argparse.ArgumentParser) -> None:
    actions = projections.add_subparsers(dest="projections_command",
                                         metavar="{rebuild,parked}",
                                         help="without one: run the service")
    _add_parked(actions)
    rebuild = actions.add_parser(
        "rebuild", help="rebuild every read model from the beginning, compare, switch",
        description="Rebuild every read model from position 0 into fresh tables, print a "
        "checksum per table beside the live one, and switch readers to the rebuilt tables in "
        "one transaction. The rebuilt tables are of the code's read-model version, which the "
        "switch records; a live table of an older version's shape is reported as changed "
        "shape, not compared. Exit 1 if any compared table differed (it is switched all the "
        "same: the log is the truth), 2 if the rebuild could not be done or --version is not "
        "the code's.")
    rebuild.add_argument("--source", choices=("auto", "log", "kafka"), default="auto",
                         help="what feeds the live read model (auto: the topic if the live "
                         "read model has offsets of DEALREG_KAFKA_TOPIC, else the log)")
    rebuild.add_argument("--dry-run", action="store_true",
                         help="build and compare, leave the live tables as they are")
    rebuild.add_argument("--version", type=int, metavar="N",
                         help="the read-model version to build: must be this code's (the "
                         "default); naming it also allows going back to it from a newer one")
    rebuild.add_argument("--page-size", type=int, default=2000,
                         help="log entries per transaction when rebuilding from the log")
    rebuild.add_argument("--data-dir", help="folder for SQLite files (DEALREG_DATA_DIR)")
    rebuild.set_defaults(run=cmd_projections_rebuild)


def _add_republish(relay: argparse.ArgumentParser) -> None:
    actions = relay.add_subparsers(dest="relay_command", metavar="{republish}",
                                   help="without one: run the service")
    republish = actions.add_parser(
        "republish", help="publish the whole log to the topic again, in a new epoch",
        description="Recovery of a topic that lost events the relay cannot see itself (the "
        "relay finds a broker that restarted empty on its own): starts a new epoch, so the "
        "leading relay publishes the log again from position 1 and the projections read "
        "each partition again from its start. Safe while everything runs.")
    republish.add_argument("--data-dir", help="folder for SQLite files (DEALREG_DATA_DIR)")
    republish.set_defaults(run=cmd_relay_republish)


def _add_keys(commands: Any) -> None:
    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    firm_help = "a firm code the key speaks for (repeat for several)"
    create = key_commands.add_parser("create", help="create a key; prints it on the last line")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--name", required=True, help="the principal recorded on its events")
    create.add_argument("--firm", action="append", help=firm_help)
    create.add_argument("--expires", type=expiry,
                        help="a date (the key stops at its start, UTC) or a duration: 30d")
    create.set_defaults(run=cmd_keys_create)
    listing = key_commands.add_parser(
        "list", help="every key: role, firms, state, created, expires, last used (never the key)")
    listing.add_argument("--json", action="store_true", help="print the keys as JSON")
    listing.set_defaults(run=cmd_keys_list)
    revoke = key_commands.add_parser("revoke", help="end a key for good")
    revoke.set_defaults(run=cmd_keys_revoke)
    rotate = key_commands.add_parser(
        "rotate", help="replace a key; prints the new one; the old one works for --grace")
    rotate.add_argument("--grace", type=duration, default=DEFAULT_GRACE,
                        help="how long the old key keeps working: 1h (default), 0s, 7d")
    rotate.add_argument("--expires", type=expiry,
                        help="a new expiry (renews an expired key); else the key keeps its own")
    rotate.set_defaults(run=cmd_keys_rotate)
    bind = key_commands.add_parser(
        "bind", help="set the firms a key speaks for (how older keys gain theirs)")
    bind.add_argument("--firm", action="append", required=True, help=firm_help)
    bind.set_defaults(run=cmd_keys_bind)
    for command in (revoke, rotate, bind):
        command.add_argument("name", help="the key's name")
    for command in (create, listing, revoke, rotate, bind):
        command.add_argument("--data-dir", help="folder for SQLite files (DEALREG_DATA_DIR)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dealreg", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the embedded registry (write + read API)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--data-dir", help="folder for SQLite files (DEALREG_DATA_DIR)")
    up.add_argument("--workers", type=worker_count, default=1, metavar="1",
                    help="only 1: the embedded mode is one process; several are the "
                    "distributed mode's (dealreg registry/projections --workers N)")
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
        if name in ("registry", "projections"):
            service.add_argument(
                "--workers", type=worker_count, default=1, metavar="N",
                help="processes serving the port, each with its own connections"
                + (" and group committer" if name == "registry" else
                   " and Kafka consumer in the group") + "; one that dies is started again "
                "(default 1: this process alone)")
        service.set_defaults(run=run)
        if name == "projections":
            _add_rebuild(service)
        if name == "relay":
            _add_republish(service)

    _add_keys(commands)

    topics = commands.add_parser("topics", help="manage the Kafka topics")
    topic_commands = topics.add_subparsers(dest="topics_command", required=True)
    create_topics = topic_commands.add_parser(
        "create", help="create DEALREG_KAFKA_TOPIC and its dead-letter topic")
    create_topics.add_argument("--partitions", type=int, default=12,
                               help="the most projection instances that can share the work")
    create_topics.add_argument("--replication", type=int, default=1)
    create_topics.set_defaults(run=cmd_topics_create)

    audit = commands.add_parser("audit", help="tamper evidence: checkpoints, verify, export")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    data_dir_help = "folder for SQLite files (DEALREG_DATA_DIR); or set DEALREG_DATABASE_URL"
    verify = audit_commands.add_parser(
        "verify", help="recompute hash chains and checkpoints; exit 1 at the first failure")
    verify.add_argument("--json", action="store_true", help="print the full report as JSON")
    checkpoint = audit_commands.add_parser(
        "checkpoint", help="record a Merkle checkpoint at the log's head now")
    export = audit_commands.add_parser(
        "export", help="write events with their hashes and covering checkpoint as NDJSON")
    export.add_argument("--from", dest="first", type=int, required=True, help="first position")
    export.add_argument("--to", dest="last", type=int, required=True, help="last position")
    export.add_argument("--output", "-o", default="-", help="file to write; - for stdout")
    export.add_argument("--proofs", action="store_true",
                        help="add each event's inclusion proof to its line")
    verify.add_argument("--public-key", help="PEM file of the key that signs tree heads "
                        "(default: derived from this machine's signing key, if it has one)")
    tree_head = audit_commands.add_parser(
        "tree-head", help="extend the tree to the log's head and print its signed head (JSON: "
        "keep it, for verify-consistency)")
    consistency = audit_commands.add_parser(
        "verify-consistency", help="check, from a signed tree head you kept, that the log "
        "today extends it; exit 1 if not",
        description="Without --url, every leaf is recomputed from the stored events (run "
        "where the database is); with --url, the service's newest signed head and its RFC "
        "9162 consistency proof are checked against the kept head.")
    consistency.add_argument("head", help="the kept head: JSON of GET /v1/audit/tree-head")
    consistency.add_argument("--url", help="the registry's base URL, to check over HTTP")
    consistency.add_argument("--api-key", help="any key, with --url (or DEALREG_API_KEY)")
    consistency.add_argument("--public-key", help="PEM file of the public key you keep "
                             "(GET /v1/audit/public-key)")
    for command, run in ((verify, cmd_audit_verify), (checkpoint, cmd_audit_checkpoint),
                         (export, cmd_audit_export), (tree_head, cmd_audit_tree_head),
                         (consistency, cmd_audit_verify_consistency)):
        command.add_argument("--data-dir", help=data_dir_help)
        command.set_defaults(run=run)
    verify_export = audit_commands.add_parser(
        "verify-export", help="check an export without any database; exit 1 at a bad line")
    verify_export.add_argument("file")
    verify_export.add_argument("--public-key", help="PEM file of the public key you keep; "
                               "without it, the key in the export is used")
    verify_export.set_defaults(run=cmd_audit_verify_export)
    new_key = audit_commands.add_parser(
        "new-signing-key", help="write a new Ed25519 key for signing tree heads (mode 0600) "
        "and print its public key", description="For DEALREG_SIGNING_KEY_FILE: every replica "
        "of the write service signs with the same key.")
    new_key.add_argument("--out", required=True, help="the key file to create")
    new_key.add_argument("--env-file", help="also append DEALREG_SIGNING_KEY=<base64 seed> to "
                         "this env file (deploy/distributed.env)")
    new_key.set_defaults(run=cmd_audit_new_signing_key)

    demo = commands.add_parser("demo", help="record the article's scenario through the HTTP API")
    demo.add_argument("--url", default="http://127.0.0.1:8000")
    demo.add_argument("--api-key", required=True,
                      help="an admin key, or a partner key acting for every firm the demo "
                           "loads (an unbound one, under DEALREG_UNBOUND_PARTNER_KEYS=allow)")
    demo.add_argument("--history", action="store_true",
                      help="then record a year of illustrative activity after the article "
                           "(fictional firms; event ids start with demo-)")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except Exception as exc:  # noqa: BLE001 - one line for the operator; details in the log
        message = operator_error(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def operator_error(exc: Exception) -> str | None:
    """The one line an operator gets for what their set-up lacks (a database, a broker, the
    signing key), or None for a bug, whose traceback is wanted."""
    if isinstance(exc, DependencyUnavailable):
        return str(exc)
    if isinstance(exc, LookupError):
        from services.registry.audit.signing import SigningKeyMissing

        return str(exc) if isinstance(exc, SigningKeyMissing) else None
    if type(exc).__module__.startswith(("psycopg", "eventsourcing", "sqlite3")):
        return f"storage unavailable: {str(exc).splitlines()[0]}"
    return None


if __name__ == "__main__":
    sys.exit(main())
