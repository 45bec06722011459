"""Applies recorded events to the read model, exactly once in effect.

Each batch is applied in one database transaction that also records how far each source was
read, so a crash loses the whole batch or nothing, and a redelivered event (its aggregate's
version at or below the one applied) is skipped. Works on SQLite and PostgreSQL.

What cannot be applied is parked (`parking`) rather than allowed to stop the feed: a batch
that fails is split until the events that fail alone are found; those are parked with their
reason, and their aggregates' later events wait behind them. The fast path stays one
transaction and one extra indexed look-up per batch.

A batch is applied in three steps: read what it needs (its aggregates' applied versions, the
deals it touches and their pledges, the totals it changes) with one query per table and 500
keys; decide every effect in memory, in log order; write with one statement per table and
kind (insert, update, delete). A deal changed by many events of a batch is written once, and
the time of a batch grows with the rows it writes, not with round trips per event.

Instances share the work by source partition (`lock_batch`): on PostgreSQL, batches of
different partitions apply at the same time, and batches of one partition one after the
other. Kafka keys records by aggregate, so those batches touch different aggregates; what
they share, the pledge totals, is changed by atomic upserts in one key order (`_add_totals`).
On SQLite, which has one writer anyway, every batch takes the database's write lock first.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import (
    Decimal,
    Inexact,
)
from functools import cache
from typing import Any
from uuid import UUID

from pydantic_core import to_jsonable_python
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Table,
    bindparam,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from contracts.events_v1 import (
    DealProposed,
    EventType,
    FirmRegistered,
    MeetingHeld,
    Payload,
)
from contracts.events_v2 import EventEnvelope
from services.projections.projectors.collection_pause import collection_paused
from services.projections.projectors.failures import describe, is_transient
from services.projections.projectors.parking import (
    ParkedEvent,
    ParkedEvents,
    SourceEntry,
    any_parked,
    failed_again,
    first_of_aggregate,
    of_aggregate,
    one,
    park,
    parked_versions,
    record_parked,
    remove,
)
from services.projections.projectors.statements import (
    announced,
    delete_by_key,
    execute_many,
    insert_into,
    rows_in,
    update_by_key,
)
from services.projections.read_model.deal_history import (
    APPLIERS,
    DealState,
    Group,
    HistoryEvent,
    TypedEvent,
    apply_deal_event,
    business_day,
    ledger_changes,
    pledge_groups,
    typed,
)
from services.projections.read_model.indian_money import decimal_text
from services.projections.read_model.progress import (
    AppliedPosition,
    SourceProgress,
    merged,
    progress_up_to,
    read_position,
    record_progress,
    stored_offsets,
)
from services.projections.read_model.tables import (
    EXACT_ARITHMETIC,
    READ_MODEL_PROJECTOR,
    ParkedState,
    applied_versions,
    deal_events,
    deal_parties,
    deals,
    exact_arithmetic,
    firms,
    meetings,
    parked_events,
    pledge_ledger,
    pledge_ledger_tree,
    pledge_totals,
    pledges,
    projector_lock,
    recorded_events,
    tree_nodes_holding,
)
from services.shared.database import dialect_insert

log = logging.getLogger("dealreg.projections.projector")

DEAL_EVENTS = frozenset(APPLIERS)

# Keys of an IN list per query: below every driver's parameter limit (SQLite: 999 in old builds).
IN_LIST_CHUNK = 500

AMOUNT_COLUMNS = ("low", "high", "usd_low", "usd_high")
DEAL_CHANGING_COLUMNS = (
    "status", "version", "updated_at", "last_position",
    "tech_transfers", "joint_ventures", "facilities", "cancellation",
)
PLEDGE_CHANGING_COLUMNS = (
    "currency", *AMOUNT_COLUMNS, "units_per_usd", "rate_source", "instrument", "tranches",
    "status", "counted",
    "revisions", "revised_at", "revision_reason", "withdrawn_at", "withdrawal_reason",
)
TOTALS_KEY = ("dimension", "group_key", "currency")
LEDGER_KEY = ("dimension", "period", "starts", "group_key", "currency")
TREE_KEY = ("dimension", "node", "group_key", "currency")


class ProjectionError(Exception):
    """An event refers to something the read model has never seen: the feed is broken."""


# Locks

def advisory_key(*names: str | int) -> int:
    """A PostgreSQL advisory-lock key (signed 64-bit) naming `names`, the same in every
    process and release (Python's own `hash` of a string changes with each process)."""
    digest = hashlib.blake2b("\x1f".join(map(str, names)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lock_scope(conn: Connection, projector: str) -> tuple[str, str, str]:
    """What a projector's locks are named after: its name and the schema of its tables, so
    a rebuild's projector (writing fresh tables in a schema of their own) never waits on the
    live one, nor the live one on it."""
    translated = conn.get_execution_options().get("schema_translate_map") or {}
    return ("dealreg.read_model", str(translated.get(None) or ""), projector)


def projector_lock_key(conn: Connection, projector: str) -> int:
    """The advisory lock every batch of `projector` takes shared, and a rebuild's switch
    exclusively (PostgreSQL)."""
    return advisory_key(*_lock_scope(conn, projector))


def partition_lock_key(conn: Connection, projector: str, source: str, partition: int) -> int:
    """The advisory lock a batch of `projector` holds while it applies events of one source
    partition (PostgreSQL)."""
    return advisory_key(*_lock_scope(conn, projector), source, partition)


def _claim_lock_row(conn: Connection, projector: str) -> None:
    # The first write of a SQLite transaction takes the database's write lock (held until
    # the transaction ends), so what the batch reads stays true until it commits.
    named = {"projector": projector}
    if conn.execute(_CLAIM_LOCK_ROW, named).rowcount == 0:
        conn.execute(dialect_insert(conn, projector_lock).values(name=projector)
                     .on_conflict_do_nothing())
        conn.execute(_CLAIM_LOCK_ROW, named)


# Built once: every batch on SQLite claims the row.
_CLAIM_LOCK_ROW = update(projector_lock) \
    .where(projector_lock.c.name == bindparam("projector")) \
    .values(name=bindparam("projector"))


def lock_batch(conn: Connection, projector: str, partitions: Iterable[tuple[str, int]]
               ) -> None:
    """Make `conn`'s transaction the only one applying to these source partitions (source,
    partition) until it ends; first thing in a batch's transaction.

    PostgreSQL: the projector's advisory lock in shared mode (only `hold_projector` takes it
    exclusively), then one exclusive lock per partition, in sorted order, so two batches
    never wait on each other in a cycle. Batches of other partitions go on at the same time.
    SQLite: the database's write lock, as for every other batch."""
    if conn.dialect.name != "postgresql":
        _claim_lock_row(conn, projector)
        return
    conn.execute(text("SELECT pg_advisory_xact_lock_shared(CAST(:key AS BIGINT))"),
                 {"key": projector_lock_key(conn, projector)})
    for source, partition in sorted(set(partitions)):
        conn.execute(text("SELECT pg_advisory_xact_lock(CAST(:key AS BIGINT))"),
                     {"key": partition_lock_key(conn, projector, source, partition)})


def hold_projector(conn: Connection, projector: str) -> None:
    """Hold off every batch of `projector`, of every partition, until `conn`'s transaction
    ends (a rebuild's switch); waits for the batches under way to commit first."""
    if conn.dialect.name != "postgresql":
        _claim_lock_row(conn, projector)
        return
    conn.execute(text("SELECT pg_advisory_xact_lock(CAST(:key AS BIGINT))"),
                 {"key": projector_lock_key(conn, projector)})


def _partitions_of(entries: Iterable[SourceEntry], progress: Iterable[SourceProgress]
                   ) -> set[tuple[str, int]]:
    """The source partitions a batch reads or records progress of."""
    return {(e.source, e.partition) for e in entries} | \
        {(p.source, p.partition) for p in progress}


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
            rows_in(table, column), {"keys": chunk}))
    return found


def pledges_needed(fresh: Sequence[tuple[EventEnvelope, HistoryEvent, Payload]]
                   ) -> dict[UUID, set[str] | None]:
    """By stored deal the batch's events touch, the pledge ids they name; None where one
    cancels the deal, which changes all its pledges."""
    needed: dict[UUID, set[str] | None] = {}
    for envelope, _, payload in fresh:
        if envelope.type not in DEAL_EVENTS or envelope.type == EventType.DEAL_PROPOSED:
            continue
        deal_id = envelope.aggregate_id
        if envelope.type == EventType.DEAL_CANCELLED:
            needed[deal_id] = None
            continue
        ids = needed.setdefault(deal_id, set())
        pledge_id = getattr(payload, "pledge_id", None)
        if ids is not None and pledge_id is not None:
            ids.add(pledge_id)
    return needed


def _aware(moment: Any) -> datetime:
    """A timestamp an aggregate query hands back, as an aware UTC datetime."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _update_by_key(table: Table, key: Sequence[str], columns: Sequence[str]) -> Any:
    return update_by_key(table, tuple(key), tuple(columns))


def _delete_by_key(table: Table, key: Sequence[str]) -> Any:
    return delete_by_key(table, tuple(key))


def _with_key(row: dict[str, Any], key: Sequence[str], columns: Sequence[str]
              ) -> dict[str, Any]:
    return {**{f"k_{name}": row[name] for name in key}, **{name: row[name] for name in columns}}


# Built once: building a statement per batch cost more than running it, in a small batch.
_PLEDGES_BY_KEY = select(pledges).where(tuple_(pledges.c.deal_id, pledges.c.pledge_id)
                                        .in_(bindparam("keys", expanding=True)))
_LAST_OCCURRED = select(deal_events.c.deal_id, func.max(deal_events.c.occurred_at)) \
    .where(deal_events.c.deal_id.in_(bindparam("keys", expanding=True))) \
    .group_by(deal_events.c.deal_id)


@dataclass
class TotalsDelta:
    """How one batch changes one group's totals."""

    count: int = 0
    low: Decimal = Decimal(0)
    high: Decimal = Decimal(0)
    usd_low: Decimal = Decimal(0)
    usd_high: Decimal = Decimal(0)


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
    # For the ledger: the business day each stored deal's history reaches, the batch's new
    # events of each deal, and what they changed in each deal's counted totals.
    last_days: dict[UUID, date] = field(default_factory=dict)
    new_deal_events: dict[UUID, list[TypedEvent]] = field(default_factory=dict)
    deal_deltas: dict[UUID, dict[Group, list[Any]]] = field(default_factory=dict)
    ledger: dict[tuple[str, str, str, str, str], list[Any]] = field(default_factory=dict)
    tree: dict[tuple[str, int, str, str], list[Any]] = field(default_factory=dict)

    def load(self, conn: Connection, needed: dict[UUID, set[str] | None]) -> None:
        """Read the stored deals the batch touches, the pledges it needs of each (`needed`:
        by deal, the pledge ids its events name, or None for all of them, which only a
        cancellation needs), and how far in business time each deal's history reaches. A
        pledge the batch makes is among those needed, so a second making is still found."""
        for row in _rows_where_in(conn, deals, deals.c.deal_id, needed):
            self.deals[row["deal_id"]] = DealState(row)
            self.stored_deals.add(row["deal_id"])
        every = {d for d in self.stored_deals if needed[d] is None}
        named = [(d, pledge_id) for d in self.stored_deals if d not in every
                 for pledge_id in needed[d] or ()]
        found = _rows_where_in(conn, pledges, pledges.c.deal_id, every)
        for chunk in _chunks(named):
            found.extend(dict(row._mapping) for row in conn.execute(
                _PLEDGES_BY_KEY, {"keys": chunk}))
        for row in found:
            self.deals[row["deal_id"]].pledges[row["pledge_id"]] = row
            self.stored_pledges.add((row["deal_id"], row["pledge_id"]))
        for chunk in _chunks(self.stored_deals):
            for deal_id, latest in conn.execute(_LAST_OCCURRED, {"keys": chunk}):
                self.last_days[deal_id] = business_day(_aware(latest))

    def decide_ledger(self, conn: Connection) -> None:
        """The ledger's changes from the batch's deal events, added to each day's row, to its
        month's and to the tree's nodes that hold the day. Runs inside the batch's exact
        decimal context.

        Per deal, in the usual case, when its new events all take effect on one business day
        D no earlier than its stored history: the ledger's delta at D is what they changed
        in the deal's counted totals, as the live projection just applied them (at D the old
        fold is the deal as the batch found it, and the new one the deal as the batch leaves
        it). Its history is not read, so the cost is the batch's, not the deal's. Otherwise
        its whole history is folded by business day with and without them
        (`ledger_changes`)."""
        by_day: dict[tuple[date, str, str, str], list[Any]] = {}
        for deal_id, new in self.new_deal_events.items():
            days = {business_day(e.occurred_at) for e, _ in new}
            last_day = self.last_days.get(deal_id)
            day = min(days)
            if len(days) == 1 and (last_day is None or last_day <= day):
                changes = {(day, group): values
                           for group, values in self.deal_deltas.get(deal_id, {}).items()
                           if any(values)}
            else:
                changes = ledger_changes(self._history(conn, deal_id), new)
            for (day, (dimension, group_key, currency)), values in changes.items():
                _add_into(by_day, (day, dimension, group_key, currency), values)
        for (day, dimension, group_key, currency), values in by_day.items():
            for period, starts in (("day", day.isoformat()),
                                   ("month", day.replace(day=1).isoformat())):
                _add_into(self.ledger, (dimension, period, starts, group_key, currency), values)
            for node in tree_nodes_holding(day):
                _add_into(self.tree, (dimension, node, group_key, currency), values)

    def _history(self, conn: Connection, deal_id: UUID) -> list[TypedEvent]:
        if deal_id not in self.stored_deals:
            return []
        return [typed(HistoryEvent.of_row(row._mapping)) for row in conn.execute(
            select(deal_events).where(deal_events.c.deal_id == deal_id))]

    def changed(self, pledge: dict[str, Any]) -> None:
        key = (pledge["deal_id"], pledge["pledge_id"])
        if key in self.stored_pledges:
            self.changed_stored_pledges.add(key)

    def counted(self, pledge: dict[str, Any], sign: int) -> None:
        """Add (sign +1) or remove (sign -1) a pledge from its groups' totals, one per
        dimension (`pledge_groups`).

        Runs inside the batch's exact decimal context (`ReadModelProjector.apply`)."""
        deal_delta = self.deal_deltas.setdefault(pledge["deal_id"], {})
        low, high = pledge["low"], pledge["high"]
        usd_low, usd_high = pledge["usd_low"], pledge["usd_high"]
        if sign < 0:
            low, high, usd_low, usd_high = -low, -high, -usd_low, -usd_high
        for group in pledge_groups(pledge):
            entry = deal_delta.get(group)
            if entry is None:
                deal_delta[group] = [sign, low, high, usd_low, usd_high]
            else:
                entry[0] += sign
                entry[1] += low
                entry[2] += high
                entry[3] += usd_low
                entry[4] += usd_high
            delta = self.totals.get(group)
            if delta is None:
                delta = self.totals[group] = TotalsDelta()
            delta.count += sign
            delta.low += low
            delta.high += high
            delta.usd_low += usd_low
            delta.usd_high += usd_high

    # Writing

    def write(self, conn: Connection) -> None:
        """Send the batch's effects: one executemany per table and statement kind."""
        if self.new_firms:
            # In code order: two batches registering the same codes (the second fails on the
            # unique index) then wait on each other in one order, never in a cycle.
            execute_many(conn, insert_into(firms),
                         sorted(self.new_firms, key=lambda firm: firm["code"]))
        if self.new_meetings:
            execute_many(conn, insert_into(meetings), self.new_meetings)
        new_deals = [state.deal for deal_id, state in self.deals.items()
                     if deal_id not in self.stored_deals]
        if new_deals:
            execute_many(conn, insert_into(deals), new_deals)
        if self.stored_deals:
            execute_many(
                conn, _update_by_key(deals, ("deal_id",), DEAL_CHANGING_COLUMNS),
                [_with_key(self.deals[d].deal, ("deal_id",), DEAL_CHANGING_COLUMNS)
                 for d in self.stored_deals],
            )
        if self.new_parties:
            execute_many(conn, insert_into(deal_parties), self.new_parties)
        new_pledges = [
            row for state in self.deals.values() for row in state.pledges.values()
            if (row["deal_id"], row["pledge_id"]) not in self.stored_pledges
        ]
        if new_pledges:
            execute_many(conn, insert_into(pledges), new_pledges)
        if self.changed_stored_pledges:
            execute_many(
                conn, _update_by_key(pledges, ("deal_id", "pledge_id"), PLEDGE_CHANGING_COLUMNS),
                [_with_key(self.deals[deal_id].pledges[pledge_id], ("deal_id", "pledge_id"),
                           PLEDGE_CHANGING_COLUMNS)
                 for deal_id, pledge_id in self.changed_stored_pledges],
            )
        if self.deal_history:
            execute_many(conn, insert_into(deal_events), self.deal_history)
        if self.recorded:
            execute_many(conn, insert_into(recorded_events), self.recorded)
        self._write_totals(conn)
        self._write_ledger(conn)

    def _write_totals(self, conn: Connection) -> None:
        if not self.totals:
            return
        if conn.dialect.name == "postgresql":
            self._add_totals(conn)
        else:
            self._upsert_totals_sqlite(conn)

    def _add_totals(self, conn: Connection) -> None:
        """Add the batch's deltas to the stored totals in the database (`add_atomically`): a
        batch of another partition may change the same groups at the same time, and both
        count. Text as the Python path writes it (`exact.plus`); groups whose count fell to
        0 are deleted."""
        rows = [
            {**dict(zip(TOTALS_KEY, group, strict=True)), "pledge_count": delta.count,
             **{c: getattr(delta, c) for c in AMOUNT_COLUMNS}}
            for group, delta in sorted(self.totals.items())
        ]
        add_atomically(conn, pledge_totals, TOTALS_KEY, rows,
                       stored_form=lambda value: +value,
                       emptied=lambda count, amounts: count == 0)

    def _upsert_totals_sqlite(self, conn: Connection) -> None:
        """The deltas added to the stored totals by one upsert, summed exactly in SQLite by
        `_sqlite_decimal_sum` (as the Python path always summed them: stored + delta), so
        nothing is read back; groups whose count fell to 0 are deleted."""
        rows = [
            {**dict(zip(TOTALS_KEY, group, strict=True)), "pledge_count": delta.count,
             **{c: getattr(delta, c) for c in AMOUNT_COLUMNS}}
            for group, delta in self.totals.items()
        ]
        _upsert_sums(conn, pledge_totals, TOTALS_KEY, rows, SQLITE_DECIMAL_SUM,
                     emptied="pledge_count = 0",
                     maybe_emptied=[row for row in rows if row["pledge_count"] <= 0])

    # The ledger: rows are sums of deltas, so an entry may fall to zero (then it is deleted,
    # as a rebuild would never write it), and amounts are kept in one text per value
    # (`_canonical`), as sums of different deltas to the same value must compare equal.

    def _write_ledger(self, conn: Connection) -> None:
        """The day and month rows, then the tree's: every batch writes the tables in one
        order, and each table's rows in key order (`add_atomically`)."""
        for table, key, changes in ((pledge_ledger, LEDGER_KEY, self.ledger),
                                    (pledge_ledger_tree, TREE_KEY, self.tree)):
            rows = _ledger_rows(key, changes)
            if not rows:
                continue
            if conn.dialect.name == "postgresql":
                # As `_add_totals`, in the ledger's canonical text; a row deleted when it
                # sums to nothing.
                add_atomically(conn, table, key, rows, stored_form=_canonical,
                               emptied=lambda count, amounts: count == 0 and not any(amounts))
            else:
                _upsert_ledger_sqlite(conn, table, key, rows)


def _add_into(sums: dict[Any, list[Any]], key: Any, values: Sequence[Any]) -> None:
    entry = sums.get(key)
    if entry is None:
        sums[key] = list(values)
    else:
        for n, value in enumerate(values):
            entry[n] += value


def _ledger_rows(key: Sequence[str], changes: dict[Any, list[Any]]) -> list[dict[str, Any]]:
    return [
        {**dict(zip(key, keyed, strict=True)), "pledge_count": values[0],
         **{c: _canonical(v) for c, v in zip(AMOUNT_COLUMNS, values[1:], strict=True)}}
        for keyed, values in sorted(changes.items()) if any(values)
    ]


def _upsert_ledger_sqlite(conn: Connection, table: Table, key: Sequence[str],
                              rows: list[dict[str, Any]]) -> None:
    """The rows added to the stored ones by one upsert (SQLite: one writer), each sum in
    the ledger's canonical text (`_sqlite_canonical_sum`); rows summing to nothing are
    deleted, as a rebuild would never write them."""
    _upsert_sums(conn, table, key, rows, SQLITE_CANONICAL_SUM,
                 emptied="pledge_count = 0 AND " + " AND ".join(
                     f"{c} = '0'" for c in AMOUNT_COLUMNS),
                 maybe_emptied=rows)


# SQL functions of the read model's SQLite connections: exact sums of decimal texts, in the
# text each path stores (SQLite's own arithmetic is binary floating point).
SQLITE_DECIMAL_SUM = "dealreg_decimal_sum"
SQLITE_CANONICAL_SUM = "dealreg_canonical_sum"


def _exact_sum(stored: str, added: str) -> Decimal:
    # The context's own method: no local context entered per row of the SQL function.
    return EXACT_ARITHMETIC.add(Decimal(stored), Decimal(added))


# A sum that would round gives NULL, which the NOT NULL column refuses: the batch fails as
# the event's fault and is parked (an error raised here would reach the projector as
# sqlite3.OperationalError, taken for the database's and retried for ever).

def _sqlite_decimal_sum(stored: str, added: str) -> str | None:
    try:
        return str(_exact_sum(stored, added))
    except Inexact:
        return None


def _sqlite_canonical_sum(stored: str, added: str) -> str | None:
    try:
        return str(_canonical(_exact_sum(stored, added)))
    except Inexact:
        return None


def _with_sqlite_sums(conn: Connection) -> None:
    """Register the sum functions on `conn`'s SQLite connection, once per connection."""
    info = conn.connection.info
    if info.get(SQLITE_DECIMAL_SUM):
        return
    driver: Any = conn.connection.driver_connection
    driver.create_function(SQLITE_DECIMAL_SUM, 2, _sqlite_decimal_sum, deterministic=True)
    driver.create_function(SQLITE_CANONICAL_SUM, 2, _sqlite_canonical_sum, deterministic=True)
    info[SQLITE_DECIMAL_SUM] = True


def _upsert_sums(conn: Connection, table: Table, key: Sequence[str],
                 rows: list[dict[str, Any]], summing: str, emptied: str,
                 maybe_emptied: list[dict[str, Any]]) -> None:
    """Add `rows` (a count and AMOUNT_COLUMNS per `key`) to `table` on SQLite: one upsert
    for all of them, then one keyed delete of those of `maybe_emptied` that `emptied`
    (SQL) says are empty now. Nothing is read: the time grows with the rows written, not
    with the rows stored at the same places."""
    if not rows:
        return
    _with_sqlite_sums(conn)
    execute_many(conn, _sqlite_upsert(table, tuple(key), summing), rows)
    if maybe_emptied:
        execute_many(conn, _delete_emptied(table, tuple(key), emptied),
                     [{f"k_{name}": row[name] for name in key} for row in maybe_emptied])


@cache
def _sqlite_upsert(table: Table, key: tuple[str, ...], summing: str) -> Any:
    inserting = sqlite_insert(table)
    new = inserting.excluded
    adding = getattr(func, summing)
    return inserting.on_conflict_do_update(
        index_elements=list(key),
        set_={"pledge_count": table.c.pledge_count + new.pledge_count,
              **{c: adding(table.c[c], new[c]) for c in AMOUNT_COLUMNS}},
    )


@cache
def _delete_emptied(table: Table, key: tuple[str, ...], emptied: str) -> Any:
    return delete_by_key(table, key).where(text(emptied))


def add_atomically(
    conn: Connection, table: Table, key: Sequence[str], rows: list[dict[str, Any]],
    stored_form: Callable[[Decimal], Decimal],
    emptied: Callable[[int, list[Decimal]], bool],
) -> None:
    """Add `rows` (a count and AMOUNT_COLUMNS per `key`) to `table`'s stored rows in the
    database (PostgreSQL), so that batches of other partitions adding to the same rows at
    the same time all count.

    One upsert of all of them (its rows as arrays), in key order, so concurrent batches lock
    shared rows in one order. NUMERIC sums are exact; a sum whose text is not
    `stored_form`'s (PostgreSQL never writes an exponent, Python does below 1E-6) is
    rewritten, its row locked already, so every backend and a rebuild store the same text.
    Rows `emptied` says are empty are deleted. Runs `stored_form` at EXACT_PRECISION with
    rounding trapped."""
    ordered = sorted(rows, key=lambda row: tuple(row[n] for n in key))
    # One array per column: the statement's text is the same for any number of rows.
    arrays = [[row[c] for row in ordered] for c in (*key, "pledge_count")] + \
        [[str(row[c]) for row in ordered] for c in AMOUNT_COLUMNS]
    driver: Any = conn.connection.driver_connection
    adding = _pg_adding(conn, table, tuple(key))
    with driver.cursor() as cursor, announced(conn, cursor, adding, arrays):
        cursor.execute(adding, arrays)
        returned = cursor.fetchall()
    width = len(key)
    empty, rewritten = [], []
    with exact_arithmetic():
        for found in returned:
            keyed = {f"k_{name}": value for name, value in zip(key, found, strict=False)}
            count, stored = found[width], found[width + 1:]
            amounts = [Decimal(value) for value in stored]
            if emptied(count, amounts):
                empty.append(keyed)
                continue
            texts = [str(stored_form(value)) for value in amounts]
            if texts != list(stored):
                rewritten.append({**keyed, **{c: Decimal(t) for c, t in zip(
                    AMOUNT_COLUMNS, texts, strict=True)}})
    if rewritten:
        conn.execute(_update_by_key(table, key, AMOUNT_COLUMNS), rewritten)
    if empty:
        conn.execute(_delete_by_key(table, key), empty)


def _pg_adding(conn: Connection, table: Table, key: tuple[str, ...]) -> str:
    """The upsert of `add_atomically` on PostgreSQL, its rows as one array per column."""
    translate = conn.get_execution_options().get("schema_translate_map") or {}
    schema = translate.get(table.schema, table.schema)
    return _pg_adding_sql(table, key, schema, conn.dialect)


@cache
def _pg_adding_sql(table: Table, key: tuple[str, ...], schema: str | None, dialect: Any
                   ) -> str:
    quote = dialect.identifier_preparer.quote
    name = f"{quote(schema)}.{quote(table.name)}" if schema else quote(table.name)
    columns = [*key, "pledge_count", *AMOUNT_COLUMNS]
    arrays = ", ".join(f"%s::{table.c[c].type.compile(dialect=dialect)}[]" for c in columns)
    sums = ", ".join(f"{quote(c)} = CAST(CAST(t.{quote(c)} AS NUMERIC) + "
                     f"CAST(excluded.{quote(c)} AS NUMERIC) AS TEXT)" for c in AMOUNT_COLUMNS)
    listed = ", ".join(quote(c) for c in columns)
    return (f"INSERT INTO {name} AS t ({listed}) SELECT * FROM unnest({arrays}) "
            f"ON CONFLICT ({', '.join(quote(k) for k in key)}) DO UPDATE SET "
            f"pledge_count = t.pledge_count + excluded.pledge_count, {sums} "
            f"RETURNING {', '.join('t.' + quote(c) for c in columns)}")


def _canonical(value: Decimal) -> Decimal:
    """One Decimal per value (no trailing zeros, no negative zero), so its text is too."""
    return Decimal(decimal_text(value))




# The envelope, its event with the payload in the newest schema version, and that typed.
Handler = Callable[[BatchEffects, EventEnvelope, HistoryEvent, Any], None]


# Firms and meetings

def _firm_registered(batch: BatchEffects, e: EventEnvelope, _: HistoryEvent,
                     p: FirmRegistered) -> None:
    batch.new_firms.append(dict(
        firm_id=e.aggregate_id, code=p.code, name=p.name, country=p.country, kind=p.kind,
        registered_at=e.occurred_at, position=e.position,
    ))


def _meeting_held(batch: BatchEffects, e: EventEnvelope, _: HistoryEvent,
                  p: MeetingHeld) -> None:
    batch.new_meetings.append(dict(
        meeting_id=e.aggregate_id, title=p.title, location=p.location,
        closed_door=p.closed_door, attendees=list(p.attendees),
        government_bodies=list(p.government_bodies), sectors=list(p.sectors),
        summary=p.summary, occurred_at=e.occurred_at, recorded_at=e.recorded_at,
        position=e.position,
    ))


# Deals: the rules are deal_history's, shared with past views

def _deal_event(batch: BatchEffects, e: EventEnvelope, event: HistoryEvent, p: Payload
                ) -> None:
    refusal = apply_deal_event(batch.deals, event, p, batch)
    if refusal is not None:
        raise ProjectionError(f"event at position {e.position} ({e.type.value}) {refusal}")
    batch.new_deal_events.setdefault(e.aggregate_id, []).append((event, p))
    if isinstance(p, DealProposed):
        batch.new_parties.extend(
            {"deal_id": e.aggregate_id, "firm_code": firm_code}
            for firm_code in dict.fromkeys(p.parties)  # A party named twice is one party.
        )
    batch.deal_history.append({
        "position": e.position, "deal_id": e.aggregate_id,
        "aggregate_version": e.aggregate_version, "type": e.type.value,
        "event_id": e.event_id, "occurred_at": e.occurred_at, "recorded_at": e.recorded_at,
        # In its type's newest schema version, as past views read it back (`of_row`).
        "recorded_by": e.recorded_by, "payload": to_jsonable_python(event.payload),
        "hash": e.hash, "previous_hash": e.previous_hash,
    })


HANDLERS: dict[EventType, Handler] = {
    EventType.FIRM_REGISTERED: _firm_registered,
    EventType.MEETING_HELD: _meeting_held,
    **{deal_event: _deal_event for deal_event in DEAL_EVENTS},
}


@dataclass(frozen=True)
class Projected:
    """What one call of `ReadModelProjector.project` did."""

    position: int  # the log position the read model reflects now
    applied: int = 0  # envelopes applied for the first time
    parked: tuple[ParkedEvent, ...] = ()


@dataclass
class _Outcome:
    position: int = 0
    applied: int = 0
    parked: list[ParkedEvent] = field(default_factory=list)


@dataclass(frozen=True)
class RetryOutcome:
    """What became of one parked event on a retry."""

    event: ParkedEvent
    applied: bool
    reason: str = ""  # why it is still parked


class ReadModelProjector:
    """Keeps the read model's tables in step with the registry's log.

    `apply` is all or nothing: a batch that fails changes nothing and raises. `project`,
    what the feeds use, never fails because of the data: it parks what it cannot apply
    (`parking`) and applies the rest; only a transient failure (`failures.is_transient`)
    reaches its caller, which retries the batch.
    """

    def __init__(
        self, engine: Engine, name: str = READ_MODEL_PROJECTOR,
        applied: AppliedPosition | None = None,
    ) -> None:
        self.engine = engine
        self.name = name
        self.applied = applied or AppliedPosition()
        self.parked = ParkedEvents(engine, name)
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
        An event of an aggregate that has parked events is parked behind them. `progress`
        says how far each source was read (by default: the log, up to the last envelope).
        Raises, changing nothing, if any event cannot be applied. Returns the log position
        the read model now reflects.
        """
        if progress is None:
            progress = [SourceProgress.of_log(max(e.position for e in envelopes))] \
                if envelopes else []
        with collection_paused():
            outcome = self._commit([SourceEntry.of_log(e) for e in envelopes], progress)
        self._log_parked(outcome.parked)
        return outcome.position

    def project(
        self, entries: Sequence[SourceEntry], progress: Sequence[SourceProgress]
    ) -> Projected:
        """Apply what can be applied of `entries` and park the rest, recording `progress`.

        The batch is tried in one transaction; if it fails for a reason that is not
        transient, it is split in halves, each tried the same way in source order, down to
        the single entries that fail alone: those are parked with their reason. Transient
        failures are raised (nothing of the failed transaction stays; retry the batch)."""
        outcome = _Outcome()
        with collection_paused():
            self._project(sorted(entries, key=_source_order), progress, outcome)
        return Projected(outcome.position, outcome.applied, tuple(outcome.parked))

    def _project(self, entries: Sequence[SourceEntry], progress: Sequence[SourceProgress],
                 outcome: _Outcome) -> None:
        try:
            done = self._commit(entries, progress)
        except Exception as exc:
            if is_transient(exc) or not entries:
                raise
            if len(entries) == 1:
                done = self._park_alone(entries[0], describe(exc), progress)
            else:
                half = len(entries) // 2
                self._project(entries[:half], progress_up_to(entries[:half]), outcome)
                self._project(entries[half:], progress, outcome)
                return
        self._log_parked(done.parked)
        outcome.position = done.position
        outcome.applied += done.applied
        outcome.parked.extend(done.parked)

    def _commit(self, entries: Sequence[SourceEntry], progress: Sequence[SourceProgress],
                releasing: UUID | None = None) -> _Outcome:
        with self._applying:
            with self.engine.begin() as conn:
                self._lock(conn, _partitions_of(entries, progress))
                outcome = self._apply_in(conn, entries, progress, releasing)
            self.applied.set(outcome.position)  # committed: readers may now be told
        return outcome

    def _park_alone(self, entry: SourceEntry, reason: str,
                    progress: Sequence[SourceProgress]) -> _Outcome:
        """Park one entry that failed by itself, and record the progress past it."""
        with self._applying:
            with self.engine.begin() as conn:
                self._lock(conn, _partitions_of([entry], progress))
                outcome = _Outcome()
                aggregate, version = entry.aggregate_id, entry.aggregate_version
                applied = self._applied_versions(conn, {aggregate}) if aggregate else {}
                duplicate = (aggregate is not None and version is not None
                             and version <= applied.get(aggregate, 0))
                if not duplicate and not self._parked_already(conn, entry):
                    outcome.parked.append(park(conn, self.name, entry, ParkedState.FAILED,
                                               reason))
                for item in merged(progress):
                    record_progress(conn, self.name, item)
                outcome.position = read_position(conn, self.name)
            self.applied.set(outcome.position)
        return outcome

    def _parked_already(self, conn: Connection, entry: SourceEntry) -> bool:
        aggregate, version = entry.aggregate_id, entry.aggregate_version
        if aggregate is not None and version is not None:
            return version in parked_versions(conn, self.name, [aggregate]).get(aggregate, set())
        return record_parked(conn, self.name, entry)

    def _log_parked(self, parked: Iterable[ParkedEvent]) -> None:
        for event in parked:
            log.error("parked event %s", event.describe(), extra={"fields": {
                "parked_id": event.id, "state": event.state.value, "position": event.position,
                "aggregate_id": event.aggregate_id, "aggregate_version": event.aggregate_version,
                "source": event.source, "partition": event.partition, "offset": event.offset,
                "reason": event.reason,
            }})

    def retry_parked(
        self, parked_id: int | None = None,
        reread: Callable[[ParkedEvent], SourceEntry | None] | None = None,
    ) -> list[RetryOutcome]:
        """Re-apply parked events: those of the aggregate of event `parked_id`, or all.

        An aggregate's events are re-applied in order, each in a transaction of its own under
        the lock of the partition it was parked from (safe beside a running feed, which
        takes the same lock); each applied one leaves the table.
        At the first that fails again, it is kept as failed with the new reason and the
        aggregate's later events stay waiting. `reread` gives a fresh entry for an event whose
        parked form is no envelope (e.g. re-translated from the log), or None."""
        with self.engine.connect() as conn:
            if parked_id is None:
                rows = conn.execute(select(parked_events.c.id, parked_events.c.aggregate_id)
                                    .where(parked_events.c.projector == self.name)
                                    .order_by(parked_events.c.id)).all()
            else:
                rows = conn.execute(select(parked_events.c.id, parked_events.c.aggregate_id)
                                    .where(parked_events.c.projector == self.name,
                                           parked_events.c.id == parked_id)).all()
        outcomes: list[RetryOutcome] = []
        done: set[UUID] = set()
        for row in rows:
            if row.aggregate_id is None:
                event = self.parked.get(row.id)
                if event is not None:
                    outcomes.extend(self._retry_aggregate(None, event, reread))
            elif row.aggregate_id not in done:
                done.add(row.aggregate_id)
                first = self._first_parked(row.aggregate_id)
                if first is not None:
                    outcomes.extend(self._retry_aggregate(row.aggregate_id, first, reread))
        return outcomes

    def _first_parked(self, aggregate_id: UUID) -> ParkedEvent | None:
        with self.engine.connect() as conn:
            return first_of_aggregate(conn, self.name, aggregate_id)

    def _retry_aggregate(
        self, aggregate_id: UUID | None, first: ParkedEvent,
        reread: Callable[[ParkedEvent], SourceEntry | None] | None,
    ) -> list[RetryOutcome]:
        """Retry an aggregate's parked events from `first` on. The next one is looked up after
        each success, so that an event the live feed parked behind them meanwhile is applied
        too, never left waiting behind nothing."""
        outcomes: list[RetryOutcome] = []
        event: ParkedEvent | None = first
        tried: set[int] = set()
        while event is not None and event.id not in tried:
            tried.add(event.id)
            reason = self._retry_one(event, reread)
            if reason:
                outcomes.append(RetryOutcome(event, applied=False, reason=reason))
                if aggregate_id is not None:
                    with self.engine.connect() as conn:
                        later = of_aggregate(conn, self.name, aggregate_id)
                    outcomes.extend(
                        RetryOutcome(waiting, applied=False,
                                     reason=f"waits behind parked event #{event.id}")
                        for waiting in later if waiting.id != event.id)
                break
            outcomes.append(RetryOutcome(event, applied=True))
            event = self._first_parked(aggregate_id) if aggregate_id is not None else None
        return outcomes

    def _retry_one(self, event: ParkedEvent,
                   reread: Callable[[ParkedEvent], SourceEntry | None] | None) -> str:
        """Apply one parked event and remove it, in one transaction; '' on success, else why
        it stays parked (then marked as failed with that reason)."""
        envelope = event.envelope()
        entry: SourceEntry | None = SourceEntry(event.source, event.partition, event.offset,
                                                envelope) if envelope else None
        if entry is None and reread is not None:
            entry = reread(event)
        if entry is None or entry.envelope is None:
            reason = (entry.unreadable.reason if entry is not None and entry.unreadable
                      else f"still no envelope to apply ({event.reason})")
        else:
            try:
                with self._applying:
                    with self.engine.begin() as conn:
                        # The partition it was parked from, and the one it is re-read from.
                        self._lock(conn, {(event.source, event.partition),
                                          *_partitions_of([entry], [])})
                        if one(conn, self.name, event.id) is None:
                            return ""  # retried meanwhile by someone else
                        remove(conn, event.id)
                        outcome = self._apply_in(conn, [entry], [], releasing=event.aggregate_id)
                        if outcome.parked:
                            raise ProjectionError(outcome.parked[0].reason)
                return ""
            except Exception as exc:
                if is_transient(exc):
                    raise
                reason = describe(exc)
        with self.engine.begin() as conn:
            self._lock(conn, {(event.source, event.partition)})
            failed_again(conn, event.id, reason)
        log.error("parked event #%s failed again: %s", event.id, reason)
        return reason

    def _apply_in(
        self, conn: Connection, entries: Sequence[SourceEntry],
        progress: Sequence[SourceProgress], releasing: UUID | None = None,
    ) -> _Outcome:
        """Apply `entries` and record `progress` in `conn`'s transaction, which holds the
        locks of their partitions already (`_lock`)."""
        outcome = _Outcome()
        aggregate_ids = {a for e in entries if (a := e.aggregate_id) is not None}
        before = self._applied_versions(conn, aggregate_ids)
        applied = dict(before)
        # Aggregates with parked events, and the versions parked: one cheap look when none.
        blocked = parked_versions(conn, self.name, aggregate_ids) \
            if aggregate_ids and any_parked(conn, self.name) else {}
        if releasing is not None:
            blocked.pop(releasing, None)  # a retry applies the first of them
        fresh: list[tuple[EventEnvelope, HistoryEvent, Payload]] = []
        for entry in sorted(entries, key=_source_order):
            aggregate, version = entry.aggregate_id, entry.aggregate_version
            if version is not None and aggregate is not None \
                    and version <= applied.get(aggregate, 0):
                continue  # applied before: a redelivery or a republished event
            if entry.unreadable is not None:
                if not self._parked_already(conn, entry):
                    outcome.parked.append(park(conn, self.name, entry, ParkedState.FAILED,
                                               entry.unreadable.reason))
                if aggregate is not None:
                    blocked.setdefault(aggregate, set()).add(version)
                continue
            envelope = entry.envelope
            assert envelope is not None and aggregate is not None
            if aggregate in blocked:
                if version not in blocked[aggregate]:
                    outcome.parked.append(park(
                        conn, self.name, entry, ParkedState.WAITING,
                        "waits behind an earlier parked event of its aggregate"))
                    blocked[aggregate].add(version)
                continue
            # Any schema version, read in the newest (a v1 pledge payload upcast), once for
            # the rules, the history row and the typed payload.
            fresh.append((envelope, *typed(HistoryEvent.of_envelope(envelope))))
            applied[aggregate] = envelope.aggregate_version
        batch = BatchEffects()
        batch.load(conn, pledges_needed(fresh))
        with exact_arithmetic():
            # Sums of stored amounts never round: a rounding would be an error, not a total.
            for envelope, event, payload in fresh:
                HANDLERS[envelope.type](batch, envelope, event, payload)
                batch.recorded.append({
                    "position": envelope.position, "event_id": envelope.event_id,
                    "type": envelope.type.value, "aggregate_id": envelope.aggregate_id,
                    "aggregate_version": envelope.aggregate_version,
                    "occurred_at": envelope.occurred_at,
                    "recorded_at": envelope.recorded_at,
                    "recorded_by": envelope.recorded_by, "hash": envelope.hash,
                })
            batch.decide_ledger(conn)
        batch.write(conn)
        self._write_applied_versions(conn, before, applied)
        for item in merged(progress):
            record_progress(conn, self.name, item)
        outcome.applied = len(fresh)
        outcome.position = read_position(conn, self.name)
        return outcome

    def _lock(self, conn: Connection, partitions: Iterable[tuple[str, int]]) -> None:
        # First in every transaction that writes: what a batch reads of its partitions'
        # aggregates stays true until it commits, and a rebuild's switch holds it off.
        lock_batch(conn, self.name, partitions)

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
            execute_many(conn, insert_into(applied_versions), new)
        changed = [{"k_aggregate_id": a, "version": v} for a, v in applied.items()
                   if a in before and v != before[a]]
        if changed:
            execute_many(
                conn, _update_by_key(applied_versions, ("aggregate_id",), ("version",)), changed)


def _source_order(entry: SourceEntry) -> tuple[str, int, int]:
    # Within a source partition, offsets follow the log (the relay publishes in log order,
    # keyed by aggregate), so an aggregate's events are taken in version order.
    return (entry.source, entry.partition, entry.offset)
