"""Parked events: what the projector could not apply, kept with the reason in
`rm_parked_events`, so that one bad event never holds up the rest of the read model.

An event that fails by itself is parked as `failed`. The later events of its aggregate are
parked behind it as `waiting`, in arrival order (an aggregate's events arrive in version
order: one log, or one partition keyed by aggregate id), because applying them first would
skip a version. A parked event counts as handled for the read model's position. Retrying
re-applies an aggregate's parked events in order (`ReadModelProjector.retry_parked`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, update

from contracts.events_v2 import EventEnvelope  # either schema version (v1 ones are on the topic)
from contracts.stream_v1 import StreamStamp
from services.projections.projectors.failures import printable
from services.projections.read_model.progress import LOG_SOURCE
from services.projections.read_model.tables import ParkedState, parked_events

IN_LIST_CHUNK = 500
RAW_LIMIT = 1_000_000


@dataclass(frozen=True)
class Unreadable:
    """Something read from a source that is not an envelope the projector can take: a
    stored event that could not be translated, or a record that does not parse. What is
    known of it (its aggregate above all) decides which later events wait behind it."""

    reason: str
    raw: str
    position: int | None = None
    aggregate_id: UUID | None = None
    aggregate_version: int | None = None
    event_type: str | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class SourceEntry:
    """One entry of an ordered source (the log, or a topic partition) at `offset`: an
    envelope, or something unreadable."""

    source: str
    partition: int
    offset: int
    envelope: EventEnvelope | None = None
    unreadable: Unreadable | None = None
    stamp: StreamStamp | None = None  # the relay's, on a topic record (contracts.stream_v1)

    @classmethod
    def of_log(cls, envelope: EventEnvelope) -> SourceEntry:
        return cls(LOG_SOURCE, 0, envelope.position, envelope)

    @property
    def aggregate_id(self) -> UUID | None:
        if self.envelope is not None:
            return self.envelope.aggregate_id
        return self.unreadable.aggregate_id if self.unreadable else None

    @property
    def aggregate_version(self) -> int | None:
        if self.envelope is not None:
            return self.envelope.aggregate_version
        return self.unreadable.aggregate_version if self.unreadable else None

    @property
    def position(self) -> int | None:
        if self.envelope is not None:
            return self.envelope.position
        return self.unreadable.position if self.unreadable else None


@dataclass(frozen=True)
class ParkedEvent:
    """One row of `rm_parked_events`."""

    id: int
    projector: str
    source: str
    partition: int
    offset: int
    position: int | None
    aggregate_id: UUID | None
    aggregate_version: int | None
    event_type: str | None
    event_id: str | None
    state: ParkedState
    reason: str
    raw: str
    parked_at: datetime
    attempts: int
    last_attempt_at: datetime | None

    @classmethod
    def of_row(cls, row: Any) -> ParkedEvent:
        values = dict(row._mapping)
        values["state"] = ParkedState(values["state"])
        return cls(**values)

    def envelope(self) -> EventEnvelope | None:
        """The parked envelope, or None when what was parked is not one."""
        try:
            return EventEnvelope.model_validate_json(self.raw)
        except ValueError:
            return None

    def describe(self) -> str:
        """One line for logs and the CLI: where, what, and why."""
        where = f"{self.source}[{self.partition}]@{self.offset}"
        what = (f"aggregate {self.aggregate_id} version {self.aggregate_version}"
                if self.aggregate_id else "unknown aggregate")
        return (f"#{self.id} {self.state.value} position {self.position or '-'} ({where}) "
                f"{self.event_type or '?'} of {what}: {self.reason}")


def _text(value: str | None, limit: int) -> str | None:
    return None if value is None else printable(value)[:limit]


def park(conn: Connection, projector: str, entry: SourceEntry, state: ParkedState,
         reason: str) -> ParkedEvent:
    """Insert one parked event, within the caller's transaction."""
    envelope, unreadable = entry.envelope, entry.unreadable
    if envelope is not None:
        event_type: str | None = envelope.type.value
        event_id: str | None = envelope.event_id
        raw = envelope.model_dump_json()  # JSON escapes control characters, NUL included
    else:
        assert unreadable is not None
        event_type, event_id, raw = unreadable.event_type, unreadable.event_id, unreadable.raw
    values = dict(
        projector=projector, source=entry.source, partition=entry.partition,
        offset=entry.offset, position=entry.position, aggregate_id=entry.aggregate_id,
        aggregate_version=entry.aggregate_version, event_type=_text(event_type, 200),
        event_id=_text(event_id, 300), state=state.value, reason=_text(reason, 2000),
        raw=_text(raw, RAW_LIMIT), parked_at=datetime.now(UTC), attempts=0,
        last_attempt_at=None,
    )
    inserted = conn.execute(insert(parked_events).values(values)).inserted_primary_key
    assert inserted is not None
    row_id = inserted[0]
    return ParkedEvent.of_row(conn.execute(
        select(parked_events).where(parked_events.c.id == row_id)).one())


def any_parked(conn: Connection, projector: str) -> bool:
    return conn.execute(_ANY_PARKED, {"projector": projector}).first() is not None


# Built once: every batch asks.
_ANY_PARKED = select(parked_events.c.id) \
    .where(parked_events.c.projector == bindparam("projector")).limit(1)


def parked_versions(conn: Connection, projector: str, aggregate_ids: Iterable[UUID]
                    ) -> dict[UUID, set[int | None]]:
    """For each of these aggregates that has parked events, the versions parked."""
    found: dict[UUID, set[int | None]] = {}
    listed = list(aggregate_ids)
    for start in range(0, len(listed), IN_LIST_CHUNK):
        rows = conn.execute(
            select(parked_events.c.aggregate_id, parked_events.c.aggregate_version).where(
                parked_events.c.projector == projector,
                parked_events.c.aggregate_id.in_(listed[start:start + IN_LIST_CHUNK]),
            )
        ).all()
        for row in rows:
            found.setdefault(row.aggregate_id, set()).add(row.aggregate_version)
    return found


def record_parked(conn: Connection, projector: str, entry: SourceEntry) -> bool:
    """Whether the record at this entry's source offset is parked already (redelivered)."""
    return conn.execute(select(parked_events.c.id).where(
        parked_events.c.projector == projector,
        parked_events.c.source == entry.source,
        parked_events.c.partition == entry.partition,
        parked_events.c.offset == entry.offset,
    ).limit(1)).first() is not None


def of_aggregate(conn: Connection, projector: str, aggregate_id: UUID) -> list[ParkedEvent]:
    """An aggregate's parked events in arrival (version) order."""
    return [ParkedEvent.of_row(row) for row in conn.execute(
        select(parked_events).where(parked_events.c.projector == projector,
                                    parked_events.c.aggregate_id == aggregate_id)
        .order_by(parked_events.c.id))]


def first_of_aggregate(conn: Connection, projector: str, aggregate_id: UUID
                       ) -> ParkedEvent | None:
    """The parked event an aggregate waits behind: its first in arrival order."""
    row = conn.execute(
        select(parked_events).where(parked_events.c.projector == projector,
                                    parked_events.c.aggregate_id == aggregate_id)
        .order_by(parked_events.c.id).limit(1)).first()
    return None if row is None else ParkedEvent.of_row(row)


def one(conn: Connection, projector: str, parked_id: int) -> ParkedEvent | None:
    row = conn.execute(select(parked_events).where(
        parked_events.c.projector == projector, parked_events.c.id == parked_id)).first()
    return None if row is None else ParkedEvent.of_row(row)


def remove(conn: Connection, parked_id: int) -> None:
    conn.execute(delete(parked_events).where(parked_events.c.id == parked_id))


def failed_again(conn: Connection, parked_id: int, reason: str) -> None:
    """A retry failed: the event is now the one its aggregate waits behind."""
    conn.execute(update(parked_events).where(parked_events.c.id == parked_id).values(
        state=ParkedState.FAILED.value, reason=_text(reason, 2000),
        attempts=parked_events.c.attempts + 1, last_attempt_at=datetime.now(UTC),
    ))


@dataclass(frozen=True)
class ParkedPage:
    items: Sequence[ParkedEvent]
    total: int


class ParkedEvents:
    """Reads of the parked events, for the CLI, the admin endpoint, readiness and metrics."""

    def __init__(self, engine: Engine, projector: str) -> None:
        self.engine = engine
        self.projector = projector

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(parked_events).where(
                parked_events.c.projector == self.projector)).scalar_one())

    def page(self, limit: int = 50, offset: int = 0) -> ParkedPage:
        """Parked events in the order they were parked."""
        mine = parked_events.c.projector == self.projector
        with self.engine.connect() as conn:
            total = int(conn.execute(
                select(func.count()).select_from(parked_events).where(mine)).scalar_one())
            rows = conn.execute(select(parked_events).where(mine).order_by(parked_events.c.id)
                                .limit(limit).offset(offset)).all()
        return ParkedPage([ParkedEvent.of_row(row) for row in rows], total)

    def get(self, parked_id: int) -> ParkedEvent | None:
        with self.engine.connect() as conn:
            return one(conn, self.projector, parked_id)
