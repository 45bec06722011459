"""Applies recorded events to the read model, exactly once in effect.

Each batch is applied in one database transaction that also records how far each source was
read, so a crash loses the whole batch or nothing, and a redelivered event (its aggregate's
version at or below the one applied) is skipped. Works on SQLite and PostgreSQL.

A batch is applied in three steps: read what it needs (its aggregates' applied versions, the
deals it touches and their pledges, the totals it changes) with one query per table and 500
keys; decide every effect in memory, in log order; write with one statement per table and
kind (insert, update, delete). A deal changed by many events of a batch is written once, and
the time of a batch grows with the rows it writes, not with round trips per event.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, Inexact, localcontext
from typing import Any
from uuid import UUID

from pydantic_core import to_jsonable_python
from sqlalchemy import Column, Connection, Engine, Table, bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from contracts.events_v1 import (
    DealProposed,
    EventEnvelope,
    EventType,
    FirmRegistered,
    MeetingHeld,
    Payload,
)
from services.projections.read_model.deal_history import (
    APPLIERS,
    DealState,
    HistoryEvent,
    apply_deal_event,
)
from services.projections.read_model.progress import (
    AppliedPosition,
    SourceProgress,
    merged,
    read_position,
    stored_offsets,
)
from services.projections.read_model.tables import (
    EXACT_PRECISION,
    READ_MODEL_PROJECTOR,
    TotalsDimension,
    applied_versions,
    deal_events,
    deal_parties,
    deals,
    firms,
    meetings,
    pledge_totals,
    pledges,
    projector_lock,
    recorded_events,
    source_progress,
)

DEAL_EVENTS = frozenset(APPLIERS)

# Keys of an IN list per query: below every driver's parameter limit (SQLite: 999 in old builds).
IN_LIST_CHUNK = 500

AMOUNT_COLUMNS = ("low", "high", "usd_low", "usd_high")
DEAL_CHANGING_COLUMNS = (
    "status", "version", "updated_at", "last_position",
    "tech_transfers", "joint_ventures", "facilities", "cancellation",
)
PLEDGE_CHANGING_COLUMNS = (
    "currency", *AMOUNT_COLUMNS, "units_per_usd", "rate_source", "status", "counted",
    "revisions", "revised_at", "revision_reason", "withdrawn_at", "withdrawal_reason",
)
TOTALS_KEY = ("dimension", "group_key", "currency")


class ProjectionError(Exception):
    """An event refers to something the read model has never seen: the feed is broken."""


def _insert(conn: Connection, table: Any) -> Any:
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


def _chunks(keys: Iterable[Any]) -> Iterator[list[Any]]:
    listed = list(keys)
    for start in range(0, len(listed), IN_LIST_CHUNK):
        yield listed[start:start + IN_LIST_CHUNK]


def _rows_where_in(conn: Connection, table: Table, column: Column[Any], keys: Iterable[Any]
                   ) -> list[dict[str, Any]]:
    """Every row of `table` whose `column` is one of `keys`, as dicts; one query per chunk."""
    found: list[dict[str, Any]] = []
    for chunk in _chunks(keys):
        found.extend(dict(row._mapping) for row in conn.execute(
            select(table).where(column.in_(chunk))))
    return found


def _update_by_key(table: Table, key: Sequence[str], columns: Sequence[str]) -> Any:
    """UPDATE of `columns` for the row whose primary key is `key`, for executemany: the key's
    values go by the names `k_<column>` (a bound name may not be a column being set)."""
    return update(table).where(
        *(table.c[name] == bindparam(f"k_{name}") for name in key)
    ).values({name: bindparam(name) for name in columns})


def _with_key(row: dict[str, Any], key: Sequence[str], columns: Sequence[str]
              ) -> dict[str, Any]:
    return {**{f"k_{name}": row[name] for name in key}, **{name: row[name] for name in columns}}


@dataclass
class TotalsDelta:
    """How one batch changes one group's totals."""

    count: int = 0
    low: Decimal = Decimal(0)
    high: Decimal = Decimal(0)
    usd_low: Decimal = Decimal(0)
    usd_high: Decimal = Decimal(0)


def _contribution_groups(pledge: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """The three totals groups (dimension, key, currency) a counted pledge belongs to."""
    currency = pledge["currency"]
    return (
        (TotalsDimension.SECTOR.value, pledge["sector"], currency),
        (TotalsDimension.FIRM.value, pledge["firm_code"], currency),
        (TotalsDimension.COUNTRY.value, pledge["firm_country"], currency),
    )


@dataclass
class BatchEffects:
    """Everything one batch changes, decided in memory before anything is written.

    `deals` holds complete rows of the deals the batch touches, with their pledges: those
    read from the database at the start of the batch and those the batch creates. The rules
    of `deal_history` change these rows in place and report pledge changes here (this is
    their `PledgeChanges`); `write` sends each table's changes in one statement per kind.
    """

    deals: dict[UUID, DealState] = field(default_factory=dict)
    stored_deals: set[UUID] = field(default_factory=set)
    stored_pledges: set[tuple[UUID, str]] = field(default_factory=set)
    changed_stored_pledges: set[tuple[UUID, str]] = field(default_factory=set)
    new_firms: list[dict[str, Any]] = field(default_factory=list)
    new_meetings: list[dict[str, Any]] = field(default_factory=list)
    new_parties: list[dict[str, Any]] = field(default_factory=list)
    deal_history: list[dict[str, Any]] = field(default_factory=list)
    recorded: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[tuple[str, str, str], TotalsDelta] = field(default_factory=dict)

    def load(self, conn: Connection, deal_ids: set[UUID]) -> None:
        """Read the stored deals the batch touches, and all their pledges."""
        for row in _rows_where_in(conn, deals, deals.c.deal_id, deal_ids):
            self.deals[row["deal_id"]] = DealState(row)
            self.stored_deals.add(row["deal_id"])
        for row in _rows_where_in(conn, pledges, pledges.c.deal_id, self.stored_deals):
            self.deals[row["deal_id"]].pledges[row["pledge_id"]] = row
            self.stored_pledges.add((row["deal_id"], row["pledge_id"]))

    def changed(self, pledge: dict[str, Any]) -> None:
        key = (pledge["deal_id"], pledge["pledge_id"])
        if key in self.stored_pledges:
            self.changed_stored_pledges.add(key)

    def counted(self, pledge: dict[str, Any], sign: int) -> None:
        """Add (sign +1) or remove (sign -1) a pledge from its three groups' totals.

        Runs inside the batch's exact decimal context (`ReadModelProjector.apply`)."""
        for group in _contribution_groups(pledge):
            delta = self.totals.get(group)
            if delta is None:
                delta = self.totals[group] = TotalsDelta()
            if sign > 0:
                delta.count += 1
                delta.low += pledge["low"]
                delta.high += pledge["high"]
                delta.usd_low += pledge["usd_low"]
                delta.usd_high += pledge["usd_high"]
            else:
                delta.count -= 1
                delta.low -= pledge["low"]
                delta.high -= pledge["high"]
                delta.usd_low -= pledge["usd_low"]
                delta.usd_high -= pledge["usd_high"]

    # Writing

    def write(self, conn: Connection) -> None:
        """Send the batch's effects: one executemany per table and statement kind."""
        if self.new_firms:
            conn.execute(insert(firms), self.new_firms)
        if self.new_meetings:
            conn.execute(insert(meetings), self.new_meetings)
        new_deals = [state.deal for deal_id, state in self.deals.items()
                     if deal_id not in self.stored_deals]
        if new_deals:
            conn.execute(insert(deals), new_deals)
        if self.stored_deals:
            conn.execute(
                _update_by_key(deals, ("deal_id",), DEAL_CHANGING_COLUMNS),
                [_with_key(self.deals[d].deal, ("deal_id",), DEAL_CHANGING_COLUMNS)
                 for d in self.stored_deals],
            )
        if self.new_parties:
            conn.execute(insert(deal_parties), self.new_parties)
        new_pledges = [
            row for state in self.deals.values() for row in state.pledges.values()
            if (row["deal_id"], row["pledge_id"]) not in self.stored_pledges
        ]
        if new_pledges:
            conn.execute(insert(pledges), new_pledges)
        if self.changed_stored_pledges:
            conn.execute(
                _update_by_key(pledges, ("deal_id", "pledge_id"), PLEDGE_CHANGING_COLUMNS),
                [_with_key(self.deals[deal_id].pledges[pledge_id], ("deal_id", "pledge_id"),
                           PLEDGE_CHANGING_COLUMNS)
                 for deal_id, pledge_id in self.changed_stored_pledges],
            )
        if self.deal_history:
            conn.execute(insert(deal_events), self.deal_history)
        if self.recorded:
            conn.execute(insert(recorded_events), self.recorded)
        self._write_totals(conn)

    def _write_totals(self, conn: Connection) -> None:
        if not self.totals:
            return
        stored = {
            (row["dimension"], row["group_key"], row["currency"]): row
            for row in _rows_where_in(conn, pledge_totals, pledge_totals.c.group_key,
                                      {key for _, key, _ in self.totals})
        }
        inserted, updated, deleted = [], [], []
        with localcontext() as exact:
            exact.prec = EXACT_PRECISION
            exact.traps[Inexact] = True
            for group, delta in self.totals.items():
                keyed = dict(zip(TOTALS_KEY, group, strict=True))
                row = stored.get(group)
                if row is None:
                    if delta.count != 0:
                        inserted.append({**keyed, "pledge_count": delta.count,
                                         **{c: getattr(delta, c) for c in AMOUNT_COLUMNS}})
                    continue
                count = row["pledge_count"] + delta.count
                if count == 0:
                    deleted.append({f"k_{name}": value for name, value in keyed.items()})
                    continue
                updated.append({
                    **{f"k_{name}": value for name, value in keyed.items()},
                    "pledge_count": count,
                    **{c: row[c] + getattr(delta, c) for c in AMOUNT_COLUMNS},
                })
        if inserted:
            conn.execute(insert(pledge_totals), inserted)
        if updated:
            conn.execute(
                _update_by_key(pledge_totals, TOTALS_KEY, ("pledge_count", *AMOUNT_COLUMNS)),
                updated,
            )
        if deleted:
            conn.execute(
                delete(pledge_totals).where(
                    *(pledge_totals.c[name] == bindparam(f"k_{name}") for name in TOTALS_KEY)
                ),
                deleted,
            )


Handler = Callable[[BatchEffects, EventEnvelope, Any], None]


# Firms and meetings

def _firm_registered(batch: BatchEffects, e: EventEnvelope, p: FirmRegistered) -> None:
    batch.new_firms.append(dict(
        firm_id=e.aggregate_id, code=p.code, name=p.name, country=p.country, kind=p.kind,
        registered_at=e.occurred_at, position=e.position,
    ))


def _meeting_held(batch: BatchEffects, e: EventEnvelope, p: MeetingHeld) -> None:
    batch.new_meetings.append(dict(
        meeting_id=e.aggregate_id, title=p.title, location=p.location,
        closed_door=p.closed_door, attendees=list(p.attendees),
        government_bodies=list(p.government_bodies), sectors=list(p.sectors),
        summary=p.summary, occurred_at=e.occurred_at, recorded_at=e.recorded_at,
        position=e.position,
    ))


# Deals: the rules are deal_history's, shared with past views

def _deal_event(batch: BatchEffects, e: EventEnvelope, p: Payload) -> None:
    refusal = apply_deal_event(batch.deals, HistoryEvent.of_envelope(e), p, batch)
    if refusal is not None:
        raise ProjectionError(f"event at position {e.position} ({e.type.value}) {refusal}")
    if isinstance(p, DealProposed):
        batch.new_parties.extend(
            {"deal_id": e.aggregate_id, "firm_code": firm_code}
            for firm_code in dict.fromkeys(p.parties)  # A party named twice is one party.
        )
    batch.deal_history.append({
        "position": e.position, "deal_id": e.aggregate_id,
        "aggregate_version": e.aggregate_version, "type": e.type.value,
        "event_id": e.event_id, "occurred_at": e.occurred_at, "recorded_at": e.recorded_at,
        "recorded_by": e.recorded_by, "payload": to_jsonable_python(e.payload),
        "hash": e.hash, "previous_hash": e.previous_hash,
    })


HANDLERS: dict[EventType, Handler] = {
    EventType.FIRM_REGISTERED: _firm_registered,
    EventType.MEETING_HELD: _meeting_held,
    **{deal_event: _deal_event for deal_event in DEAL_EVENTS},
}


class ReadModelProjector:
    """Keeps the read model's tables in step with the registry's log."""

    def __init__(
        self, engine: Engine, name: str = READ_MODEL_PROJECTOR,
        applied: AppliedPosition | None = None,
    ) -> None:
        self.engine = engine
        self.name = name
        self.applied = applied or AppliedPosition()
        self._applying = threading.Lock()

    def position(self) -> int:
        """The log position the read model reflects; 0 before any event."""
        with self.engine.connect() as conn:
            return read_position(conn, self.name)

    def resume_offsets(self, source: str) -> dict[int, int]:
        """Last consumed offset per partition of `source` (for the log: the position read)."""
        return stored_offsets(self.engine, self.name, source)

    def apply(
        self, envelopes: Sequence[EventEnvelope], progress: Sequence[SourceProgress] | None = None
    ) -> int:
        """Apply the envelopes not applied before, and record `progress`, in one transaction.

        An event is new when its aggregate version is above the one applied last for that
        aggregate: redelivery and republishing have no second effect, whatever their offsets.
        `progress` says how far each source was read (by default: the log, up to the last
        envelope). Returns the log position the read model now reflects.
        """
        if progress is None:
            progress = [SourceProgress.of_log(max(e.position for e in envelopes))] \
                if envelopes else []
        with self._applying:
            with self.engine.begin() as conn:
                position = self._apply_in(conn, envelopes, progress)
            self.applied.set(position)  # committed: readers may now be told
        return position

    def _apply_in(
        self, conn: Connection, envelopes: Sequence[EventEnvelope],
        progress: Sequence[SourceProgress],
    ) -> int:
        self._lock(conn)
        before = self._applied_versions(conn, {e.aggregate_id for e in envelopes})
        applied = dict(before)
        fresh: list[tuple[EventEnvelope, Payload]] = []
        for envelope in sorted(envelopes, key=lambda e: e.position):
            if envelope.aggregate_version > applied.get(envelope.aggregate_id, 0):
                fresh.append((envelope, envelope.typed_payload()))
                applied[envelope.aggregate_id] = envelope.aggregate_version
        batch = BatchEffects()
        batch.load(conn, {
            e.aggregate_id for e, _ in fresh
            if e.type in DEAL_EVENTS and e.type != EventType.DEAL_PROPOSED
        })
        with localcontext() as exact:
            # Sums of stored amounts never round: a rounding would be an error, not a total.
            exact.prec = EXACT_PRECISION
            exact.traps[Inexact] = True
            for envelope, payload in fresh:
                HANDLERS[envelope.type](batch, envelope, payload)
                batch.recorded.append({
                    "position": envelope.position, "event_id": envelope.event_id,
                    "type": envelope.type.value, "aggregate_id": envelope.aggregate_id,
                    "aggregate_version": envelope.aggregate_version,
                    "occurred_at": envelope.occurred_at,
                    "recorded_at": envelope.recorded_at,
                    "recorded_by": envelope.recorded_by, "hash": envelope.hash,
                })
        batch.write(conn)
        self._write_applied_versions(conn, before, applied)
        for item in merged(progress):
            self._record_progress(conn, item)
        return read_position(conn, self.name)

    def _lock(self, conn: Connection) -> None:
        # Serialises batches of concurrent projectors (and a rebuild's switch), so that what a
        # batch reads stays true until it commits: writing the lock row first takes the row
        # lock on PostgreSQL and the database's write lock on SQLite.
        claim = update(projector_lock).where(projector_lock.c.name == self.name) \
            .values(name=self.name)
        if conn.execute(claim).rowcount == 0:
            conn.execute(_insert(conn, projector_lock).values(name=self.name)
                         .on_conflict_do_nothing())
            conn.execute(claim)

    @staticmethod
    def _applied_versions(conn: Connection, aggregate_ids: set[UUID]) -> dict[UUID, int]:
        """The last applied version of each aggregate in a batch: one query per chunk."""
        return {
            row["aggregate_id"]: row["version"]
            for row in _rows_where_in(conn, applied_versions, applied_versions.c.aggregate_id,
                                      aggregate_ids)
        }

    @staticmethod
    def _write_applied_versions(
        conn: Connection, before: dict[UUID, int], applied: dict[UUID, int]
    ) -> None:
        new = [{"aggregate_id": a, "version": v} for a, v in applied.items() if a not in before]
        if new:
            conn.execute(insert(applied_versions), new)
        changed = [{"k_aggregate_id": a, "version": v} for a, v in applied.items()
                   if a in before and v != before[a]]
        if changed:
            conn.execute(
                _update_by_key(applied_versions, ("aggregate_id",), ("version",)), changed)

    def _record_progress(self, conn: Connection, item: SourceProgress) -> None:
        key = (
            source_progress.c.projector == self.name,
            source_progress.c.source == item.source,
            source_progress.c.partition == item.partition,
        )
        row = conn.execute(select(source_progress).where(*key)).first()
        if row is None:
            conn.execute(insert(source_progress), dict(
                projector=self.name, source=item.source, partition=item.partition,
                offset=item.offset, position=item.position, caught_up=item.caught_up,
            ))
            return
        # Never move back: a late, smaller batch must not undo a larger one's progress.
        conn.execute(update(source_progress).where(*key), dict(
            offset=max(row.offset, item.offset),
            position=max(row.position, item.position),
            caught_up=item.caught_up if item.offset >= row.offset else row.caught_up,
        ))
