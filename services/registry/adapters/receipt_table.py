"""Receipts beside the log: one row per accepted partner event, in the events' transaction.

Idempotent ingestion needs, for each principal's event id, what was accepted: the request's
fingerprint and the event it became. Kept as an event of its own, every write put two events
in the log: twice the rows, hashes, tree leaves, feed and relay work, for a record that is
nobody's history (the event itself names who recorded it, and from which partner event). A
row in a table of the same database, inserted in the same transaction as the events (the
library's recorder hook for what is written with them), keeps every guarantee: a receipt and
its event commit together or not at all, and a second insert of one receipt id fails the
whole transaction on the primary key, so a retry in flight never records twice.

The library builds the recorder from its environment; `recorder_topic` names ours for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from services.registry.domain.receipt import IssuedReceipt

RECEIPTS_TABLE = "dealreg_receipts"
COLUMNS = ("receipt_id", "partner_event_id", "principal", "request_fingerprint", "event_type",
           "aggregate_id", "aggregate_version", "event_recorded_at")


def _row(receipt: IssuedReceipt, uuid: Callable[[UUID], Any]) -> tuple[Any, ...]:
    return (uuid(receipt.receipt_id), receipt.partner_event_id, receipt.principal,
            receipt.request_fingerprint, receipt.event_type, uuid(receipt.aggregate_id),
            receipt.aggregate_version, receipt.event_recorded_at)


def _hex(value: UUID) -> str:  # as SQLite holds ids, like the library's events table
    return value.hex


class SQLiteRecorderWithReceipts(SQLiteApplicationRecorder):
    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(),
                f"CREATE TABLE IF NOT EXISTS {RECEIPTS_TABLE} ("
                "receipt_id TEXT PRIMARY KEY, partner_event_id TEXT NOT NULL, "
                "principal TEXT NOT NULL, request_fingerprint TEXT NOT NULL, "
                "event_type TEXT NOT NULL, aggregate_id TEXT NOT NULL, "
                "aggregate_version INTEGER NOT NULL, event_recorded_at TEXT NOT NULL)"]

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent],
                       *, receipts: Sequence[IssuedReceipt] = (), **kwargs: Any
                       ) -> Sequence[int] | None:
        positions = super()._insert_events(c, stored_events, **kwargs)
        if receipts:
            c.executemany(f"INSERT INTO {RECEIPTS_TABLE} ({', '.join(COLUMNS)}) "  # noqa: S608
                          f"VALUES ({', '.join('?' * len(COLUMNS))})",
                          [_row(r, _hex) for r in receipts])
        return positions


class PostgresRecorderWithReceipts(PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        # Receipts go with the events through `_insert_events`, which the database-function
        # path of the library's insert skips.
        assert not datastore.enable_db_functions, "receipts need the plain insert path"
        table = SQL("{}.{}").format(Identifier(datastore.schema), Identifier(RECEIPTS_TABLE))
        self.sql_create_statements.append(SQL(
            "CREATE TABLE IF NOT EXISTS {} (receipt_id uuid PRIMARY KEY, "
            "partner_event_id text NOT NULL, principal text NOT NULL, "
            "request_fingerprint text NOT NULL, event_type text NOT NULL, "
            "aggregate_id uuid NOT NULL, aggregate_version integer NOT NULL, "
            "event_recorded_at text NOT NULL)").format(table))
        self.insert_receipts_statement = SQL("INSERT INTO {} ({}) VALUES ({})").format(
            table, SQL(", ").join(map(Identifier, COLUMNS)),
            SQL(", ").join(SQL("%s") for _ in COLUMNS))

    def _insert_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent],
                       *, receipts: Sequence[IssuedReceipt] = (), **kwargs: Any) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        if receipts:
            curs.executemany(self.insert_receipts_statement,
                             [_row(r, lambda value: value) for r in receipts])


def recorder_topic(persistence_module: str) -> str | None:
    """The library's topic of our recorder for its persistence module."""
    recorder = {"eventsourcing.sqlite": SQLiteRecorderWithReceipts,
                "eventsourcing.postgres": PostgresRecorderWithReceipts}.get(persistence_module)
    return None if recorder is None else f"{recorder.__module__}:{recorder.__qualname__}"
