"""The event store: the eventsourcing library's native SQLite or PostgreSQL recorder.

The library's notification log is the outbox: every event gets its position in the same
transaction as the aggregate's events, and the log is what projections and the relay follow.
Positions strictly increase; on PostgreSQL a refused save can leave a gap, so consumers
compare positions and never count them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder

# Stored events name their classes by explicit topics, which resolve only once the classes
# are defined: every process that reads the store must import every aggregate module.
from services.registry.domain import deal, firm, meeting, receipt  # noqa: F401
from services.shared.settings import Settings


class DealRegistryStore(Application[UUID]):
    """Aggregates and their events, with the notification log that orders them all."""

    name = "DealRegistry"

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
