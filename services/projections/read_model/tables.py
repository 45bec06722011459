"""The read model's tables: what the projector writes and the query API reads.

Amounts are stored as decimal text, not SQL NUMERIC: SQLite keeps NUMERIC as a float, and
totals must stay exact on every backend. Pledge totals are kept up to date by the projector
in `rm_pledge_totals`, so a totals query reads a few rows instead of summing every pledge.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import UTC, date, datetime
from decimal import (
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    Uuid,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
)

from services.shared.database import upgrade_columns

# The tracking row of the projector that feeds these tables.
READ_MODEL_PROJECTOR = "read_model"
# The version of the read model this code builds. Bump it whenever a table's shape (a column,
# a table or an index added, dropped or changed) or a projection rule changes: a read model
# of an older version is then never used as it is, but rebuilt from the log or the topic
# beside the live one and switched to (`dealreg projections rebuild --version N`; `dealreg
# up` does it by itself). The live read model's version is in `rm_read_model_version`.
READ_MODEL_VERSION = 2
# The version of a read model built before versions were recorded (no row): the first shape.
UNVERSIONED_READ_MODEL = 1
# Decimal precision at which sums of stored amounts never round (rounding is trapped).
EXACT_PRECISION = 80
# Decimal arithmetic at that precision, a rounding raising Inexact: a rounding would be an
# error, not a total. Enter it with `exact_arithmetic()`, or call its methods directly.
EXACT_ARITHMETIC = Context(prec=EXACT_PRECISION,
                           traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])


def exact_arithmetic() -> AbstractContextManager[Context]:
    return localcontext(EXACT_ARITHMETIC)


class DealStatus(StrEnum):
    PROPOSED = "proposed"
    AGREED = "agreed"
    CANCELLED = "cancelled"


class PledgeStatus(StrEnum):
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"


class TotalsDimension(StrEnum):
    """What pledge totals are grouped by; the group key is a sector, firm code, country or
    instrument (INSTRUMENT_NOT_STATED for a pledge that states none)."""

    SECTOR = "sector"
    FIRM = "firm"
    COUNTRY = "country"
    INSTRUMENT = "instrument"


# The instrument group of pledges that state none (made before event schema v2, or in v1).
INSTRUMENT_NOT_STATED = "not_stated"


class DecimalText(TypeDecorator[Decimal]):
    """An exact Decimal stored as its text, identical on SQLite and PostgreSQL."""

    impl = String(80)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


read_model = MetaData()

firms = Table(
    "rm_firms",
    read_model,
    Column("firm_id", Uuid, primary_key=True),
    Column("code", String(100), nullable=False, unique=True),
    Column("name", String(300), nullable=False),
    Column("country", String(8), nullable=False),
    Column("kind", String(100), nullable=False),
    Column("registered_at", UtcDateTime, nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("ix_rm_firms_country_code", "country", "code"),
    Index("ix_rm_firms_kind_code", "kind", "code"),
)

meetings = Table(
    "rm_meetings",
    read_model,
    Column("meeting_id", Uuid, primary_key=True),
    Column("title", String(500), nullable=False),
    Column("location", String(300), nullable=False),
    Column("closed_door", Boolean, nullable=False),
    Column("attendees", JSON, nullable=False),
    Column("government_bodies", JSON, nullable=False),
    Column("sectors", JSON, nullable=False),
    Column("summary", Text, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("position", BigInteger, nullable=False),
    # Listed newest first.
    Index("ix_rm_meetings_occurred", "occurred_at", "position"),
)

deals = Table(
    "rm_deals",
    read_model,
    Column("deal_id", Uuid, primary_key=True),
    Column("title", String(500), nullable=False),
    Column("format", String(50), nullable=False),
    Column("sector", String(50), nullable=False),
    Column("status", String(20), nullable=False),
    Column("parties", JSON, nullable=False),
    Column("description", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("proposed_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("proposed_position", BigInteger, nullable=False),
    Column("last_position", BigInteger, nullable=False),
    # Lists of what was signed, formed or announced; a deal may see more than one.
    Column("tech_transfers", JSON, nullable=False),
    Column("joint_ventures", JSON, nullable=False),
    Column("facilities", JSON, nullable=False),
    Column("cancellation", JSON, nullable=True),
    # Deals are listed newest first, optionally filtered by one of these columns.
    Index("ix_rm_deals_proposed", "proposed_position"),
    Index("ix_rm_deals_sector", "sector", "proposed_position"),
    Index("ix_rm_deals_format", "format", "proposed_position"),
    Index("ix_rm_deals_status", "status", "proposed_position"),
)

# One row per party of a deal, so "deals of this firm" is an indexed lookup, not a JSON scan.
deal_parties = Table(
    "rm_deal_parties",
    read_model,
    Column("deal_id", Uuid, primary_key=True),
    Column("firm_code", String(100), primary_key=True),
    Index("ix_rm_deal_parties_firm", "firm_code", "deal_id"),
)

pledges = Table(
    "rm_pledges",
    read_model,
    Column("deal_id", Uuid, primary_key=True),
    Column("pledge_id", String(200), primary_key=True),
    Column("firm_code", String(100), nullable=False),
    Column("firm_country", String(8), nullable=False),
    Column("sector", String(50), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("low", DecimalText, nullable=False),
    Column("high", DecimalText, nullable=False),
    Column("usd_low", DecimalText, nullable=False),
    Column("usd_high", DecimalText, nullable=False),
    Column("units_per_usd", DecimalText, nullable=False),
    Column("rate_source", String(300), nullable=False),
    # The terms (event schema v2): an instrument's value, NULL when not stated; the schedule
    # as a JSON list of {"due_date": ISO date, "amount": decimal text}, [] when none.
    Column("instrument", String(30), nullable=True),
    Column("tranches", JSON, nullable=False),
    Column("status", String(20), nullable=False),
    # True while the pledge is in the totals: active and its deal not cancelled.
    Column("counted", Boolean, nullable=False),
    Column("made_at", UtcDateTime, nullable=False),
    Column("revisions", Integer, nullable=False),
    Column("revised_at", UtcDateTime, nullable=True),
    Column("revision_reason", Text, nullable=True),
    Column("withdrawn_at", UtcDateTime, nullable=True),
    Column("withdrawal_reason", Text, nullable=True),
    Column("position", BigInteger, nullable=False),
    Index("ix_rm_pledges_firm", "firm_code"),
)

pledge_totals = Table(
    "rm_pledge_totals",
    read_model,
    Column("dimension", String(10), primary_key=True),
    Column("group_key", String(100), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("pledge_count", Integer, nullable=False),
    Column("low", DecimalText, nullable=False),
    Column("high", DecimalText, nullable=False),
    Column("usd_low", DecimalText, nullable=False),
    Column("usd_high", DecimalText, nullable=False),
)

# The pledge totals' changes by business date: per group and UTC day (period "day", `starts`
# that day) the change of the totals as of the end of that day from the day before, and per
# calendar month (period "month", `starts` its first day) the sum of its days: an over-time
# answer adds a bucket's rows to the totals before it (from `pledge_ledger_tree`). Dates are
# ISO text (YYYY-MM-DD), which sorts as dates do.
pledge_ledger = Table(
    "rm_pledge_ledger",
    read_model,
    Column("dimension", String(10), primary_key=True),
    Column("period", String(5), primary_key=True),
    Column("starts", String(10), primary_key=True),
    Column("group_key", String(100), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("pledge_count", Integer, nullable=False),
    Column("low", DecimalText, nullable=False),
    Column("high", DecimalText, nullable=False),
    Column("usd_low", DecimalText, nullable=False),
    Column("usd_high", DecimalText, nullable=False),
)

# The same changes as prefix sums over business days: a Fenwick (binary indexed) tree whose
# node `node` (a day's proleptic ordinal, `date.toordinal()`) holds, per group and currency,
# the sum of the day rows of the days after ordinal node - lowbit(node) up to node itself
# (lowbit: the lowest set bit). The totals as of a day are the sum of at most 22 nodes
# (`tree_nodes_summing`); a day's change is added to at most 22 (`tree_nodes_holding`). Adds
# commute, so batches of concurrent partitions write it as they write the other rows.
pledge_ledger_tree = Table(
    "rm_pledge_ledger_tree",
    read_model,
    Column("dimension", String(10), primary_key=True),
    Column("node", Integer, primary_key=True, autoincrement=False),
    Column("group_key", String(100), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("pledge_count", Integer, nullable=False),
    Column("low", DecimalText, nullable=False),
    Column("high", DecimalText, nullable=False),
    Column("usd_low", DecimalText, nullable=False),
    Column("usd_high", DecimalText, nullable=False),
)
# The last day a tree node can stand for (9999-12-31); nodes above it are never summed.
LAST_TREE_NODE = date.max.toordinal()


def tree_nodes_holding(day: date) -> list[int]:
    """The tree's nodes whose sums include `day`'s change: its ordinal, then each node's
    parent (the node plus its lowest set bit), up to LAST_TREE_NODE."""
    found, node = [], day.toordinal()
    while node <= LAST_TREE_NODE:
        found.append(node)
        node += node & -node
    return found


def tree_nodes_summing(day: date) -> list[int]:
    """The tree's nodes whose sum is the totals as of the end of `day`: its ordinal, then
    each node less its lowest set bit, down to nothing; their ranges tile days 1 to `day`."""
    found, node = [], day.toordinal()
    while node > 0:
        found.append(node)
        node -= node & -node
    return found


# A row here says the ledger was added to a read model that already held events, so it
# lacks what came before (`create_read_schema`): until a rebuild (whose fresh tables have no
# such row) replaces it, past totals are folded from the deals' history instead.
ledger_incomplete = Table(
    "rm_ledger_incomplete",
    read_model,
    Column("since_position", BigInteger, primary_key=True, autoincrement=False),
)

deal_events = Table(
    "rm_deal_events",
    read_model,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("deal_id", Uuid, nullable=False),
    Column("aggregate_version", Integer, nullable=False),
    Column("type", String(40), nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("recorded_by", String(100), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("hash", String(128), nullable=False),
    Column("previous_hash", String(128), nullable=False),
    Index("ix_rm_deal_events_deal_version", "deal_id", "aggregate_version", unique=True),
)

# Every projected event and who recorded it: auditors list what each principal recorded,
# and a recorded time resolves to a log position, both by index.
recorded_events = Table(
    "rm_recorded_events",
    read_model,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(200), nullable=False),
    Column("type", String(40), nullable=False),
    Column("aggregate_id", Uuid, nullable=False),
    Column("aggregate_version", Integer, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("recorded_by", String(100), nullable=False),
    Column("hash", String(128), nullable=False),
    Index("ix_rm_recorded_events_by", "recorded_by", "recorded_at", "position"),
    Index("ix_rm_recorded_events_at", "recorded_at", "position"),
)

projector_lock = Table(
    "rm_projector_lock",
    read_model,
    Column("name", String(100), primary_key=True),
)

applied_versions = Table(
    "rm_applied_versions",
    read_model,
    Column("aggregate_id", Uuid, primary_key=True),
    Column("version", Integer, nullable=False),
)

source_progress = Table(
    "rm_source_progress",
    read_model,
    Column("projector", String(100), primary_key=True),
    Column("source", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("offset", BigInteger, nullable=False),
    Column("position", BigInteger, nullable=False),
    # The stamp of the last relay record handled here (contracts.stream_v1); 0 and -1: none.
    Column("epoch", BigInteger, nullable=False, server_default=text("0")),
    Column("seq", BigInteger, nullable=False, server_default=text("-1")),
)


class ParkedState(StrEnum):
    """Why an event is parked: it failed itself, or it waits behind an earlier parked event
    of its aggregate (applying it first would skip a version)."""

    FAILED = "failed"
    WAITING = "waiting"


# What the projector could not apply. Not part of the read model's state, so kept apart from
# `read_model`: a rebuild neither compares nor replaces it.
parking = MetaData()

parked_events = Table(
    "rm_parked_events",
    parking,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("projector", String(100), nullable=False),
    # Where it was read: the log (offset = position) or a topic partition and offset.
    Column("source", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    # What it is, as far as it could be read; unknown for a record that is not an envelope.
    Column("position", BigInteger, nullable=True),
    Column("aggregate_id", Uuid, nullable=True),
    Column("aggregate_version", Integer, nullable=True),
    Column("event_type", String(200), nullable=True),
    Column("event_id", String(300), nullable=True),
    Column("state", String(10), nullable=False),
    Column("reason", Text, nullable=False),
    # The envelope's JSON, or the record or stored event as it was read (NUL escaped).
    Column("raw", Text, nullable=False),
    Column("parked_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_attempt_at", UtcDateTime, nullable=True),
    # An aggregate's parked events in arrival order, which is its version order.
    Index("ix_rm_parked_events_aggregate", "projector", "aggregate_id", "id"),
)


# The version of the live read model (`READ_MODEL_VERSION` of the code that built it). Not
# part of the read model's state either: a rebuild sets it in the transaction of its switch.
versions = MetaData()

read_model_version = Table(
    "rm_read_model_version",
    versions,
    Column("projector", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("built_at", UtcDateTime, nullable=False),
)


def stored_read_model_version(conn: Connection) -> int | None:
    """The version of the read model in `conn`'s database: its row, else
    UNVERSIONED_READ_MODEL if the read model's tables exist, else None (there is none yet)."""
    names = set(inspect(conn).get_table_names())
    if read_model_version.name in names:
        stored = conn.execute(select(read_model_version.c.version).where(
            read_model_version.c.projector == READ_MODEL_PROJECTOR)).scalar()
        if stored is not None:
            return int(stored)
    if any(table.name in names for table in read_model.sorted_tables):
        return UNVERSIONED_READ_MODEL
    return None


def record_read_model_version(conn: Connection, version: int) -> None:
    """Say, in `conn`'s transaction, that the read model is of `version` from now on."""
    conn.execute(delete(read_model_version).where(
        read_model_version.c.projector == READ_MODEL_PROJECTOR))
    conn.execute(insert(read_model_version).values(
        projector=READ_MODEL_PROJECTOR, version=version, built_at=datetime.now(UTC)))


def create_read_schema(engine: Engine) -> None:
    """Create the read model's tables and indexes where missing; run once at start-up.

    Never alters a table: a read model of another version than the code's is rebuilt
    (`rebuild.rebuild_read_model`), which the callers check first. A new read model is
    of the code's version, recorded before its tables are made."""
    existing = set(inspect(engine).get_table_names())
    versions.create_all(engine)
    if not any(table.name in existing for table in read_model.sorted_tables):
        with engine.begin() as conn:
            if stored_read_model_version(conn) is None:
                record_read_model_version(conn, READ_MODEL_VERSION)
    read_model.create_all(engine)
    ledger_tables = {pledge_ledger.name, pledge_ledger_tree.name}
    if not ledger_tables <= existing and recorded_events.name in existing:
        # A ledger table new to a read model that holds events lacks what came before.
        with engine.begin() as conn:
            held = conn.execute(select(func.max(recorded_events.c.position))).scalar()
            marked = conn.execute(select(ledger_incomplete.c.since_position).where(
                ledger_incomplete.c.since_position == held)).first()
            if held is not None and marked is None:
                conn.execute(insert(ledger_incomplete).values(since_position=held))
    parking.create_all(engine)
    upgrade_columns(engine, source_progress, retired=("caught_up",))
