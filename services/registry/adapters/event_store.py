"""The event store: the eventsourcing library's native SQLite or PostgreSQL recorder.

The library's notification log is the outbox: every event gets its position in the same
transaction as the aggregate's events, and the log is what projections and the relay follow.
Positions strictly increase; on PostgreSQL a refused save can leave a gap, so consumers
compare positions and never count them.

Snapshots live in a table of their own beside the events, outside the notification log, so
the relay, the projections and an auditor recomputing the hash chain see events only.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import fields
from datetime import date
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    IntegrityError,
    JSONTranscoder,
    Notification,
    Transcoding,
    UUIDAsHex,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import Environment, EnvType

from services.registry.adapters.receipt_table import COLUMNS, RECEIPTS_TABLE, recorder_topic

# Stored events name their classes by explicit topics, which resolve only once the classes
# are defined: every process that reads the store must import every aggregate module.
from services.registry.domain import deal, firm, meeting, receipt  # noqa: F401
from services.registry.domain.deal import Pledge
from services.registry.domain.receipt import IngestionReceipt, IssuedReceipt
from services.registry.domain.values import AmountRange, Tranche, UsdConversion
from services.shared.settings import Settings

log = logging.getLogger("dealreg.event_store")

SNAPSHOT_INTERVAL = "SNAPSHOT_INTERVAL"


class DataclassAsDict(Transcoding):
    """A value dataclass as a JSON object of its fields, for aggregate state in snapshots.

    Fields go through their own transcodings (Decimal as its exact string), and the name is
    stable, so moving the class does not orphan stored snapshots.
    """

    def __init__(self, value_type: type, name: str) -> None:
        self.type = value_type
        self.name = name

    def encode(self, obj: Any) -> dict[str, Any]:
        return {f.name: getattr(obj, f.name) for f in fields(obj)}

    def decode(self, data: dict[str, Any]) -> Any:
        return self.type(**data)


class DateAsISO(Transcoding):
    """A calendar date as its ISO text (a pledge's tranche due dates in snapshots). Events
    never hold one: they store dates as ISO strings, plain JSON an auditor hashes as is."""

    type = date
    name = "dealregistry:date"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


# Enum-valued state needs no transcoding: aggregates keep an enum's value, a plain string,
# and a StrEnum member would reach JSON as that string before any transcoding is asked.
STATE_TRANSCODINGS = (
    DataclassAsDict(AmountRange, "dealregistry:AmountRange"),
    DataclassAsDict(UsdConversion, "dealregistry:UsdConversion"),
    DataclassAsDict(Pledge, "dealregistry:Pledge"),
    DataclassAsDict(Tranche, "dealregistry:Tranche"),
    DateAsISO(),
)


def stored_state_transcoder() -> JSONTranscoder:
    """The transcoder stored event state is written with, without a store: for checking an
    export's stored bytes offline. The library's own three transcodings (its Application's
    register_transcodings) and ours."""
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), *STATE_TRANSCODINGS):
        transcoder.register(transcoding)
    return transcoder


def snapshot_interval(env: Environment) -> int:
    """Versions between snapshots of an aggregate; 0 (the default) takes none."""
    interval = int(env.get(SNAPSHOT_INTERVAL) or 0)
    if interval < 0:
        raise ValueError(f"{SNAPSHOT_INTERVAL} must be >= 0, got {interval}")
    return interval


class DealRegistryStore(Application[UUID]):
    """Aggregates and their events, with the notification log that orders them all.

    With SNAPSHOT_INTERVAL = N > 0 in its environment, every recorded aggregate whose version
    reaches a multiple of N is snapshotted after the save, and loads start from the latest
    snapshot, so a long-lived deal costs at most N events to load.
    """

    name = "DealRegistry"

    def __init__(self, env: EnvType | None = None) -> None:
        super().__init__(env)
        self.snapshot_interval = snapshot_interval(self.factory.env)

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        environment = super().construct_env(name, env)
        environment["IS_SNAPSHOTTING_ENABLED"] = "y" if snapshot_interval(environment) else "n"
        # Receipts are written with the events by our recorder (adapters.receipt_table).
        topic = recorder_topic(environment.get("PERSISTENCE_MODULE", ""))
        if topic is not None:
            environment["APPLICATION_RECORDER_TOPIC"] = topic
        return environment

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        for transcoding in STATE_TRANSCODINGS:
            transcoder.register(transcoding)

    def snapshot_if_due(self, aggregate: Any, first_new_version: int) -> None:
        """Snapshot `aggregate` as the write path holds it, just committed, when its new
        versions (`first_new_version` to its version) reached a multiple of the interval.

        Taken from memory: the library's `take_snapshot` loads the aggregate again, the
        last snapshot and up to an interval of events, which cost more than the events
        themselves. The write path saves events, not aggregates, so the library's own
        hook in `save` never snapshots them."""
        interval = self.snapshot_interval
        if self.snapshots is None or not interval:
            return
        if aggregate.version // interval == (first_new_version - 1) // interval:
            return
        # The events are committed by now: a snapshot that cannot be written must not turn
        # their save into an error; loads just replay a few more events.
        try:
            snapshot_class: Any = getattr(type(aggregate), "Snapshot", type(self).snapshot_class)
            self.snapshots.put([snapshot_class.take(aggregate)])
        except IntegrityError:
            log.debug("snapshot of %s at %d already taken by another writer", aggregate.id,
                      aggregate.version)
        except Exception:  # noqa: BLE001 - see above
            log.exception("could not snapshot %s at version %d", aggregate.id,
                          aggregate.version)

    def log_position_of(self, aggregate_id: UUID, version: int) -> int | None:
        """Position in the log of one stored event, found by the events table's primary key."""
        recorder: Any = self.recorder
        table = recorder.events_table_name
        if isinstance(recorder, SQLiteApplicationRecorder):
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(
                    f"SELECT rowid FROM {table} WHERE originator_id=? AND originator_version=?",
                    (aggregate_id.hex, version),
                )
                row = cursor.fetchone()
                return None if row is None else int(row[0])
        if isinstance(recorder, PostgresApplicationRecorder):
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(
                    f"SELECT notification_id FROM {table} "  # noqa: S608 - table name is ours
                    "WHERE originator_id=%s AND originator_version=%s",
                    (aggregate_id, version),
                )
                row = cursor.fetchone()
                return None if row is None else int(row["notification_id"])
        raise TypeError(f"unsupported recorder {type(recorder).__name__}")

    def stored_aggregates(self, aggregate_ids: Collection[UUID]) -> set[UUID]:
        """Which of these aggregates have a first event stored: one query per 500 ids."""
        table = self.recorder.events_table_name  # type: ignore[attr-defined]
        return self._ids_present(table, "originator_id", aggregate_ids, "AND originator_version=1")

    def _ids_present(self, table: str, column: str, ids: Collection[UUID],
                     condition: str = "") -> set[UUID]:
        """Which of these ids the table holds in `column` (a uuid: hex text on SQLite, as the
        library stores them), one query per 500 ids."""
        if not isinstance(self.recorder, SQLiteApplicationRecorder | PostgresApplicationRecorder):
            raise TypeError(f"unsupported recorder {type(self.recorder).__name__}")
        recorder: Any = self.recorder
        sqlite = isinstance(recorder, SQLiteApplicationRecorder)
        wanted = list(ids)
        found: set[UUID] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            with recorder.datastore.transaction(commit=False) as cursor:
                if sqlite:
                    cursor.execute(
                        f"SELECT {column} FROM {table} "  # noqa: S608 - names are ours
                        f"WHERE {column} IN ({','.join('?' * len(chunk))}) {condition}",
                        [i.hex for i in chunk])
                    found.update(UUID(row[0]) for row in cursor.fetchall())
                else:
                    cursor.execute(f"SELECT {column} AS id FROM {table} "  # noqa: S608 - ours
                                   f"WHERE {column} = ANY(%s) {condition}", (chunk,))
                    found.update(row["id"] for row in cursor.fetchall())
        return found

    def read_by_aggregate(
        self, after: tuple[UUID, int] | None, limit: int
    ) -> list[Notification]:
        """Up to `limit` stored events ordered by aggregate id, then version, from just after
        the (aggregate id, version) given: the events table's primary key order."""
        recorder: Any = self.recorder
        table = recorder.events_table_name
        if isinstance(recorder, SQLiteApplicationRecorder):
            where, params = "", [limit]  # type: tuple[str, list[Any]]
            if after is not None:
                where, params = "WHERE (originator_id, originator_version) > (?, ?) ", [
                    after[0].hex, after[1], limit]
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(
                    f"SELECT rowid, originator_id, originator_version, topic, state "  # noqa: S608
                    f"FROM {table} {where}ORDER BY originator_id, originator_version LIMIT ?",
                    params,
                )
                return [Notification(id=row[0], originator_id=UUID(row[1]),
                                     originator_version=row[2], topic=row[3], state=row[4])
                        for row in cursor.fetchall()]
        if isinstance(recorder, PostgresApplicationRecorder):
            where_pg, params_pg = "", [limit]  # type: tuple[str, list[Any]]
            if after is not None:
                where_pg = "WHERE (originator_id, originator_version) > (%s, %s) "
                params_pg = [after[0], after[1], limit]
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(
                    f"SELECT notification_id, originator_id, originator_version, topic, state "  # noqa: S608
                    f"FROM {table} {where_pg}ORDER BY originator_id, originator_version "
                    "LIMIT %s",
                    params_pg,
                )
                return [Notification(id=row["notification_id"],
                                     originator_id=row["originator_id"],
                                     originator_version=row["originator_version"],
                                     topic=row["topic"], state=bytes(row["state"]))
                        for row in cursor.fetchall()]
        raise TypeError(f"unsupported recorder {type(recorder).__name__}")

    def positions_between(self, after: int, until: int) -> list[int]:
        """The positions the log holds in (after, until], ascending."""
        recorder: Any = self.recorder
        table = recorder.events_table_name
        if isinstance(recorder, SQLiteApplicationRecorder):
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(f"SELECT rowid FROM {table} "  # noqa: S608 - name is ours
                               "WHERE rowid > ? AND rowid <= ? ORDER BY rowid", (after, until))
                return [int(row[0]) for row in cursor.fetchall()]
        if isinstance(recorder, PostgresApplicationRecorder):
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(f"SELECT notification_id AS n FROM {table} "  # noqa: S608
                               "WHERE notification_id > %s AND notification_id <= %s "
                               "ORDER BY notification_id", (after, until))
                return [int(row["n"]) for row in cursor.fetchall()]
        raise TypeError(f"unsupported recorder {type(recorder).__name__}")

    def issued_receipt(self, receipt_id: UUID) -> IssuedReceipt | None:
        """The receipt with this id: a row beside the log, or in a store written before
        receipts were kept there, its event."""
        recorder: Any = self.recorder
        select = f"SELECT {', '.join(COLUMNS)} FROM {RECEIPTS_TABLE} "  # noqa: S608 - ours
        with recorder.datastore.transaction(commit=False) as cursor:
            if isinstance(recorder, SQLiteApplicationRecorder):
                cursor.execute(select + "WHERE receipt_id=?", (receipt_id.hex,))
                row = cursor.fetchone()
                values = None if row is None else dict(zip(COLUMNS, row, strict=True))
            else:
                cursor.execute(select + "WHERE receipt_id=%s", (receipt_id,))
                values = cursor.fetchone()
        if values is not None:
            return IssuedReceipt(**{**values, "receipt_id": UUID(str(values["receipt_id"])),
                                    "aggregate_id": UUID(str(values["aggregate_id"]))})
        try:
            legacy: Any = self.repository.get(receipt_id)
        except AggregateNotFoundError:
            return None
        return legacy.issued() if isinstance(legacy, IngestionReceipt) else None

    def stored_receipts(self, receipt_ids: Collection[UUID]) -> set[UUID]:
        """Which of these receipts are stored, beside the log or (written before) in it."""
        found = self._ids_present(RECEIPTS_TABLE, "receipt_id", receipt_ids)
        rest = [i for i in receipt_ids if i not in found]
        return found | (self.stored_aggregates(rest) if rest else set())

    def originators_after(self, after: int) -> list[tuple[int, UUID]]:
        """The position and aggregate of every event after `after`, ascending."""
        recorder: Any = self.recorder
        table = recorder.events_table_name
        if isinstance(recorder, SQLiteApplicationRecorder):
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(f"SELECT rowid, originator_id FROM {table} "  # noqa: S608
                               "WHERE rowid > ? ORDER BY rowid", (after,))
                return [(int(row[0]), UUID(row[1])) for row in cursor.fetchall()]
        if isinstance(recorder, PostgresApplicationRecorder):
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(f"SELECT notification_id AS n, originator_id FROM {table} "  # noqa: S608
                               "WHERE notification_id > %s ORDER BY notification_id", (after,))
                return [(int(row["n"]), row["originator_id"]) for row in cursor.fetchall()]
        raise TypeError(f"unsupported recorder {type(recorder).__name__}")

    def count_events(self, after: int, until: int) -> int:
        """How many events the log holds at positions in (after, until]."""
        recorder: Any = self.recorder
        table = recorder.events_table_name
        if isinstance(recorder, SQLiteApplicationRecorder):
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(f"SELECT count(*) FROM {table} "  # noqa: S608 - name is ours
                               "WHERE rowid > ? AND rowid <= ?", (after, until))
                return int(cursor.fetchone()[0])
        if isinstance(recorder, PostgresApplicationRecorder):
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(f"SELECT count(*) AS n FROM {table} "  # noqa: S608 - ours
                               "WHERE notification_id > %s AND notification_id <= %s",
                               (after, until))
                row = cursor.fetchone()
                return 0 if row is None else int(row["n"])
        raise TypeError(f"unsupported recorder {type(recorder).__name__}")

    def head_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def read_log(self, after: int, limit: int) -> Sequence[Notification]:
        """Up to `limit` notifications with positions greater than `after`, in order."""
        return self.recorder.select_notifications(
            start=after, limit=limit, inclusive_of_start=False
        )


def open_event_store(settings: Settings) -> DealRegistryStore:
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return DealRegistryStore(env=settings.event_store_env())
