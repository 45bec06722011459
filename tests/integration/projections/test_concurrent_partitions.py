"""Projection instances on different source partitions apply at the same time (PostgreSQL).

A batch holds its partitions' locks until it commits: a batch of the same partition waits
for it, a batch of another partition does not. The pledge totals and the pledge ledger (its
day, month and tree rows) that batches of every partition share count every batch, and come
out as a serial application writes them. A rebuild's switch holds off the batches of every
partition. Waiting is observed in pg_locks.
"""

from __future__ import annotations

import io
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy import exc as sa

from contracts.events_v1 import EventType
from services.projections.projectors.failures import is_transient
from services.projections.projectors.parking import SourceEntry
from services.projections.projectors.read_model_projector import (
    Projected,
    ReadModelProjector,
    partition_lock_key,
    projector_lock_key,
)
from services.projections.read_model.deal_history import PastBound
from services.projections.read_model.progress import SourceProgress
from services.projections.read_model.queries import ReadModelQueries
from services.projections.read_model.tables import (
    READ_MODEL_PROJECTOR,
    TotalsDimension,
    create_read_schema,
    firms,
    pledge_ledger,
    pledge_ledger_tree,
    pledge_totals,
    source_progress,
    tree_nodes_holding,
)
from services.projections.rebuild.checksums import checksums
from services.projections.rebuild.feeds import KafkaFeed
from services.projections.rebuild.fresh_tables import PostgresFreshTables
from services.projections.rebuild.progress_bar import RebuildProgress
from services.projections.rebuild.rebuild import rebuild_read_model
from services.projections.service import consumer_config
from services.shared.database import create_sql_engine
from services.shared.settings import sqlalchemy_url
from tests.integration.distributed.test_kafka_flow import Cluster, cluster_settings
from tests.integration.rebuild.test_rebuild_from_log import add_deal, fill
from tests.kafka_broker import KafkaTopic
from tests.unit.projections.envelopes import EventLog, money, usd

pytestmark = pytest.mark.integration

TOPIC = "t.concurrent"
PARTITIONS = 4
HANG_GUARD_SECONDS = 60.0  # only ever reached when something is broken


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_sql_engine(sqlalchemy_url(postgres_url))
    create_read_schema(engine)
    yield engine
    engine.dispose()


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Topic:
    """Events of an `EventLog` spread over partitions by aggregate, as the relay keys them;
    each partition's entries get consecutive offsets in log order."""

    def __init__(self) -> None:
        self.log = EventLog()
        self.home: dict[UUID, int] = {}
        self._next_offset: dict[int, int] = defaultdict(int)
        self._taken = 0

    def on(self, partition: int, aggregate_id: UUID) -> UUID:
        self.home[aggregate_id] = partition
        return aggregate_id

    def firm(self, partition: int, code: str, country: str) -> UUID:
        return self.on(partition, self.log.firm(code, country))

    def new_entries(self) -> dict[int, list[SourceEntry]]:
        """The entries of the events recorded since the last call, by partition."""
        by_partition: dict[int, list[SourceEntry]] = defaultdict(list)
        for envelope in self.log.envelopes[self._taken:]:
            partition = self.home[envelope.aggregate_id]
            offset = self._next_offset[partition]
            self._next_offset[partition] += 1
            by_partition[partition].append(SourceEntry(TOPIC, partition, offset, envelope))
        self._taken = len(self.log.envelopes)
        return dict(by_partition)


def progress_of(entries: Sequence[SourceEntry]) -> list[SourceProgress]:
    """How far a batch of one partition reads: its last offset and position."""
    last = entries[-1]
    assert last.envelope is not None
    return [SourceProgress(TOPIC, last.partition, last.offset, last.envelope.position)]


def batches(entries: Sequence[SourceEntry], size: int) -> list[list[SourceEntry]]:
    return [list(entries[start:start + size]) for start in range(0, len(entries), size)]


def waiting_for(engine: Engine, key: Callable[[Connection], int]) -> int:
    """How many transactions wait for the advisory lock `key(conn)` in this database."""
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND objsubid = 1"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND ((classid::bigint << 32) | objid::bigint) = :key"
        ), {"key": key(conn)}).scalar_one())


def any_advisory_waiter(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )).scalar_one())


def partition_key(partition: int) -> Callable[[Connection], int]:
    return lambda conn: partition_lock_key(conn, READ_MODEL_PROJECTOR, TOPIC, partition)


def firm_codes(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(firms.c.code)).scalars())


def offsets(engine: Engine) -> dict[int, int]:
    with engine.connect() as conn:
        return {row.partition: row.offset for row in conn.execute(
            select(source_progress.c.partition, source_progress.c.offset)
            .where(source_progress.c.source == TOPIC))}


class BlockingProjector(ReadModelProjector):
    """Stops in its batch's transaction, with its locks held and its effects written but
    not committed, until `release` is set."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.inside = threading.Event()
        self.release = threading.Event()

    def _apply_in(self, conn: Connection, entries: Sequence[SourceEntry],
                  progress: Sequence[SourceProgress], releasing: UUID | None = None) -> Any:
        outcome = super()._apply_in(conn, entries, progress, releasing)
        self.inside.set()
        self.release.wait()
        return outcome


def test_a_batch_waits_for_its_own_partition_only(engine: Engine) -> None:
    topic = Topic()
    topic.firm(0, "toyota", "JP")
    topic.firm(1, "tata-motors", "IN")
    first = topic.new_entries()
    topic.firm(0, "suzuki", "JP")
    second = topic.new_entries()
    held = BlockingProjector(engine)  # three instances, as if three processes
    other, third = ReadModelProjector(engine), ReadModelProjector(engine)

    with ThreadPoolExecutor(max_workers=3) as pool:
        holding = pool.submit(held.project, first[0], progress_of(first[0]))
        try:
            wait_until(held.inside.is_set, "the batch of partition 0 to hold its lock")

            beside: Future[Projected] = pool.submit(other.project, first[1],
                                                    progress_of(first[1]))
            wait_until(lambda: beside.done() or any_advisory_waiter(engine),
                       "partition 1's batch to commit or to wait")
            assert beside.done(), "the batch of partition 1 waits for partition 0's"
            assert beside.result().applied == 1
            assert firm_codes(engine) == {"tata-motors"}  # partition 0's is not committed
            assert offsets(engine) == {1: 0}

            behind: Future[Projected] = pool.submit(third.project, second[0],
                                                    progress_of(second[0]))
            wait_until(lambda: waiting_for(engine, partition_key(0)) == 1 or behind.done(),
                       "partition 0's second batch to wait on its lock")
            assert not behind.done(), "a second batch of partition 0 did not wait"
        finally:
            held.release.set()
        assert holding.result().applied == 1
        assert behind.result().applied == 1
    assert firm_codes(engine) == {"toyota", "tata-motors", "suzuki"}
    assert offsets(engine) == {0: 1, 1: 0}


Entries = dict[int, list[SourceEntry]]
Totals = dict[tuple[str, str], tuple[int, Decimal, Decimal]]  # (dimension, currency) -> sums


def pledging_topic() -> tuple[list[SourceEntry], Entries, Totals]:
    """A firm's registration; then on every partition deals whose pledges (some revised,
    withdrawn or cancelled) all count in the same sector, firm and country totals; and what
    those totals must be, worked out here."""
    topic = Topic()
    topic.firm(0, "toyota", "JP")
    registration = topic.new_entries()[0]
    counted: dict[tuple[UUID, str], tuple[str, str, str]] = {}
    for partition in range(PARTITIONS):
        for d in range(6):
            deal = topic.on(partition, UUID(int=partition * 1000 + d + 1))
            topic.log.record(EventType.DEAL_PROPOSED, deal, {
                "title": "Cells", "format": "joint_venture", "sector": "battery_manufacturing",
                "parties": ["toyota"]})
            for p in range(4):
                # USD amounts of several scales; and tiny EUR ones, whose sums Python writes
                # with an exponent (2.0E-7) where PostgreSQL's NUMERIC text has none.
                currency, low, high = ("EUR", "0.00000001", "0.00000002") if p == 3 else \
                    ("USD", f"{partition + 1}{d}.{p}5", f"{partition + 2}{d}{p}")
                topic.log.pledge(deal, f"p{p}", "toyota", money(low, high, currency),
                                 usd(low, high))
                counted[(deal, f"p{p}")] = (currency, low, high)
            if d % 3 == 1:
                topic.log.revise(deal, "p0", money("7.125", "9", "USD"), usd("7.125", "9"))
                counted[(deal, "p0")] = ("USD", "7.125", "9")
            if d % 3 == 2:
                topic.log.withdraw(deal, "p1")
                del counted[(deal, "p1")]
            if d == 5:
                topic.log.cancel(deal)
                for p in range(4):
                    counted.pop((deal, f"p{p}"), None)
    totals: Totals = {}
    for dimension in TotalsDimension:
        for currency in ("EUR", "USD"):
            amounts = [(Decimal(low), Decimal(high))
                       for c, low, high in counted.values() if c == currency]
            totals[(dimension.value, currency)] = (
                len(amounts), sum((low for low, _ in amounts), Decimal(0)),
                sum((high for _, high in amounts), Decimal(0)))
    return registration, spread_in_business_time(topic.new_entries()), totals


def spread_in_business_time(by_partition: Entries) -> Entries:
    """The same entries with their events' business dates spread over some 60 days across
    a month's end, backdated or not relative to their recording: the partitions' batches
    then add to the ledger's rows of many days and to tree nodes they share."""
    spread: Entries = {}
    for partition, entries in by_partition.items():
        spread[partition] = []
        for entry in entries:
            assert entry.envelope is not None
            days = (entry.envelope.aggregate_id.int * 17 + entry.envelope.aggregate_version * 5) \
                % 60 - 20
            moved = entry.envelope.model_copy(update={
                "occurred_at": entry.envelope.occurred_at + timedelta(days=days)})
            spread[partition].append(replace(entry, envelope=moved))
    return spread


def business_days(by_partition: Entries) -> list[datetime]:
    """The end of each UTC day on which an event of `by_partition` took effect, and of the
    day before the first."""
    days = sorted({e.envelope.occurred_at.astimezone(UTC).date()
                   for entries in by_partition.values() for e in entries if e.envelope})
    return [datetime.combine(day, clock_time.max, tzinfo=UTC)
            for day in [days[0] - timedelta(days=1), *days]]


def stored_totals(engine: Engine) -> list[tuple[Any, ...]]:
    """rm_pledge_totals as stored: the amounts' text, not their value."""
    with engine.connect() as conn:
        return sorted(tuple(row) for row in conn.execute(text(
            "SELECT dimension, group_key, currency, pledge_count, low, high, usd_low, usd_high"
            " FROM rm_pledge_totals")))


class Rendezvous:
    """Where instances wait for each other in their first batch, with its locks held: they
    all get there only if batches of different partitions run at the same time. One that
    sees another wait on a lock (pg_locks) goes on, and `apart` records it."""

    def __init__(self, engine: Engine, parties: int) -> None:
        self.engine = engine
        self.parties = parties
        self.arrived = 0
        self.apart = False
        self._lock = threading.Lock()

    def meet(self) -> None:
        with self._lock:
            self.arrived += 1
        wait_until(lambda: self.arrived == self.parties or any_advisory_waiter(self.engine),
                   "every instance in its first batch, or one waiting on a lock")
        if self.arrived < self.parties:
            self.apart = True


class StartingTogether(ReadModelProjector):
    def __init__(self, engine: Engine, rendezvous: Rendezvous) -> None:
        super().__init__(engine)
        self.rendezvous = rendezvous
        self.started = False

    def _apply_in(self, conn: Connection, entries: Sequence[SourceEntry],
                  progress: Sequence[SourceProgress], releasing: UUID | None = None) -> Any:
        if not self.started:
            self.started = True
            self.rendezvous.meet()
        return super()._apply_in(conn, entries, progress, releasing)


def test_concurrent_batches_of_every_partition_all_count_in_shared_totals(
    engine: Engine, tmp_path: Path
) -> None:
    registration, by_partition, expected = pledging_topic()
    ReadModelProjector(engine).project(registration, progress_of(registration))
    rendezvous = Rendezvous(engine, PARTITIONS)

    def apply_partition(partition: int) -> int:
        projector = StartingTogether(engine, rendezvous)  # one instance per partition
        return sum(projector.project(batch, progress_of(batch)).applied
                   for batch in batches(by_partition[partition], 3))

    with ThreadPoolExecutor(max_workers=PARTITIONS) as pool:
        applied = list(pool.map(apply_partition, range(PARTITIONS)))

    assert not rendezvous.apart, "batches of different partitions waited for each other"
    assert applied == [len(by_partition[p]) for p in range(PARTITIONS)]
    with engine.connect() as conn:
        rows = {(row.dimension, row.currency): (row.pledge_count, row.low, row.high)
                for row in conn.execute(select(pledge_totals))}
        in_usd = {row.dimension: (row.usd_low, row.usd_high) for row in conn.execute(
            select(pledge_totals.c.dimension, pledge_totals.c.usd_low, pledge_totals.c.usd_high)
            .where(pledge_totals.c.currency == "EUR"))}
    assert rows == expected
    assert in_usd == {dimension.value: expected[(dimension.value, "EUR")][1:]
                   for dimension in TotalsDimension}
    assert "2.0E-7" in {text for row in stored_totals(engine) for text in row[4:]}
    # As of the end of every business day, the ledger's totals are the fold of every
    # event's history (the read model's position is the partitions' low-water mark).
    queries = ReadModelQueries(engine)
    head = max(e.envelope.position for entries in by_partition.values() for e in entries
               if e.envelope is not None)
    for end in business_days(by_partition):
        for dimension in TotalsDimension:
            assert queries.pledge_totals_on(dimension, end.date(), head) == \
                queries.pledge_totals_as_of(dimension, PastBound(head, end)), end
    with engine.connect() as conn:
        assert conn.execute(select(pledge_ledger_tree.c.node).distinct()).all()

    # The same batches one after the other, into a fresh database, by the read-modify-write
    # path (SQLite): the same rows, down to the text of every amount.
    serial = create_sql_engine(f"sqlite:///{tmp_path / 'serial.db'}")
    try:
        create_read_schema(serial)
        one_by_one = ReadModelProjector(serial)
        for entries in (registration, *(by_partition[p] for p in range(PARTITIONS))):
            for batch in batches(entries, 3):
                one_by_one.project(batch, progress_of(batch))
        assert stored_totals(engine) == stored_totals(serial)
        with engine.connect() as live, serial.connect() as fresh:
            assert checksums(live) == checksums(fresh)
    finally:
        serial.dispose()


def row_lock_waiters(engine: Engine) -> int:
    """How many transactions of this database wait for another's row (its transaction id)."""
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted"
        )).scalar_one())


def on_days(entries: list[SourceEntry], days: Sequence[date]) -> list[SourceEntry]:
    """The entries with their events' business times moved to noon (UTC) of `days`."""
    moved = []
    for entry, day in zip(entries, days, strict=True):
        assert entry.envelope is not None
        moved.append(replace(entry, envelope=entry.envelope.model_copy(update={
            "occurred_at": datetime.combine(day, clock_time(12), tzinfo=UTC)})))
    return moved


def test_tree_rows_changed_by_two_partitions_at_once_count_both(
    engine: Engine, tmp_path: Path
) -> None:
    """Two partitions' batches change one ledger tree node and no other row in common: each
    revises, backdated, a pledge of a deal cancelled since (so no live totals change), over
    days whose day and month rows differ but one tree node holds an end of each. The second
    batch waits on that node for the first, uncommitted, and adds on top of it (an atomic
    upsert) rather than writing back what it read before."""
    dates = {"a1": date(2025, 1, 5), "b1": date(2025, 3, 2),
             "a2": date(2025, 2, 27), "b2": date(2025, 4, 25)}

    def ends(first: date, second: date) -> set[int]:
        return set(tree_nodes_holding(first)) ^ set(tree_nodes_holding(second))

    shared = ends(dates["a1"], dates["b1"]) & ends(dates["a2"], dates["b2"])
    assert len(shared) == 1, "the days were chosen for one shared tree node"
    topic = Topic()
    topic.firm(0, "toyota", "JP")
    deals = [topic.on(partition, UUID(int=partition + 1)) for partition in (0, 1)]
    for deal in deals:
        topic.log.record(EventType.DEAL_PROPOSED, deal, {
            "title": "Cells", "format": "joint_venture", "sector": "recycling",
            "parties": ["toyota"]})
        topic.log.pledge(deal, "p0", "toyota", money("1.5", "2", "USD"), usd("1.5", "2"))
        topic.log.cancel(deal)
    recorded = topic.new_entries()
    before = {0: on_days(recorded[0], [date(2025, 1, 1)] * 2 + [date(2025, 1, 2),
                                                                 dates["b1"]]),
              1: on_days(recorded[1], [date(2025, 2, 1), date(2025, 2, 2), dates["b2"]])}
    for n, deal in enumerate(deals):
        topic.log.revise(deal, "p0", money(f"{n + 3}.25", "9", "USD"), usd(f"{n + 3}.25", "9"))
    revised = topic.new_entries()
    after = {0: on_days(revised[0], [dates["a1"]]), 1: on_days(revised[1], [dates["a2"]])}
    for partition in (0, 1):
        ReadModelProjector(engine).project(before[partition], progress_of(before[partition]))
    held = BlockingProjector(engine)
    with ThreadPoolExecutor(max_workers=2) as pool:
        holding = pool.submit(held.project, after[0], progress_of(after[0]))
        try:
            wait_until(held.inside.is_set, "partition 0's batch to write, uncommitted")
            beside = pool.submit(ReadModelProjector(engine).project, after[1],
                                 progress_of(after[1]))
            wait_until(lambda: beside.done() or row_lock_waiters(engine) > 0,
                       "partition 1's batch to wait for partition 0's tree node")
            assert not beside.done(), "partition 1's batch did not wait for the shared node"
        finally:
            held.release.set()
        assert holding.result().applied == beside.result().applied == 1

    head = max(e.envelope.position for entries in (*before.values(), *after.values())
               for e in entries if e.envelope is not None)
    queries = ReadModelQueries(engine)
    counted = 0
    for offset in range(130):
        end = datetime.combine(date(2024, 12, 31) + timedelta(days=offset), clock_time.max,
                               tzinfo=UTC)
        for dimension in TotalsDimension:
            totals = queries.pledge_totals_on(dimension, end.date(), head)
            assert totals == queries.pledge_totals_as_of(dimension, PastBound(head, end)), end
            counted += len(totals)
    assert counted > 0
    serial = create_sql_engine(f"sqlite:///{tmp_path / 'serial.db'}")
    try:
        create_read_schema(serial)
        for entries in (before[0], before[1], after[0], after[1]):
            ReadModelProjector(serial).project(entries, progress_of(entries))
        with engine.connect() as live, serial.connect() as fresh:
            tables = [pledge_ledger, pledge_ledger_tree]
            assert checksums(live, tables) == checksums(fresh, tables)
    finally:
        serial.dispose()


def test_a_rebuilds_hold_keeps_batches_of_every_partition_waiting(engine: Engine) -> None:
    topic = Topic()
    for partition in range(PARTITIONS):
        topic.firm(partition, f"firm-{partition}", "JP")
    by_partition = topic.new_entries()
    projectors = [ReadModelProjector(engine) for _ in range(PARTITIONS)]

    with ThreadPoolExecutor(max_workers=PARTITIONS) as pool:
        with PostgresFreshTables(engine).holding_live():
            held = [pool.submit(projectors[p].project, by_partition[p],
                                progress_of(by_partition[p])) for p in range(PARTITIONS)]

            def projector_key(conn: Connection) -> int:
                return projector_lock_key(conn, READ_MODEL_PROJECTOR)

            wait_until(lambda: waiting_for(engine, projector_key) == PARTITIONS
                       or any(f.done() for f in held),
                       "every partition's batch to wait for the hold")
            assert not any(f.done() for f in held), "a batch went on while held"
            assert firm_codes(engine) == set()
        assert [f.result().applied for f in held] == [1] * PARTITIONS
    assert firm_codes(engine) == {f"firm-{p}" for p in range(PARTITIONS)}


def test_a_deadlock_is_transient(engine: Engine) -> None:
    """Batches that wait on each other in a cycle (e.g. on rows of the firm code index) are
    retried, not parked: PostgreSQL's deadlock error (40P01) counts as transient."""
    both_hold_one = threading.Barrier(2)

    def lock(first: int, second: int) -> sa.DBAPIError | None:
        try:
            with engine.begin() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": first})
                both_hold_one.wait(HANG_GUARD_SECONDS)
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": second})
        except sa.DBAPIError as exc:
            return exc
        return None

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lock, (1, 2), (2, 1)))
    failed = [exc for exc in outcomes if exc is not None]
    assert len(failed) == 1
    assert getattr(failed[0].orig, "sqlstate", None) == "40P01"
    assert is_transient(failed[0])


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str, kafka_topic: KafkaTopic) -> Iterator[Cluster]:
    running = Cluster(cluster_settings(tmp_path, postgres_url, kafka_topic))
    yield running
    running.close()


def test_a_rebuild_after_two_instances_applied_concurrently_finds_no_mismatch(
    cluster: Cluster
) -> None:
    instances = [cluster.consumer() for _ in range(2)]
    for instance in instances:
        cluster.start_consumer(instance)
    wait_until(lambda: sorted(p for i in instances for p in i.stats.lag) == [0, 1, 2, 3]
               and all(i.stats.lag for i in instances),
               "the two instances to share the 4 partitions")
    cluster.start_relay()
    cluster.record_scenario()
    fill(cluster.store, 400)
    cluster.wait_visible(cluster.store.head_position())
    assert all(instance.stats.applied > 0 for instance in instances)

    report = rebuild_read_model(cluster.read_engine, KafkaFeed(consumer_config(cluster.settings)),
                                RebuildProgress(io.StringIO()))
    assert report.switched and report.mismatched == []

    # The instances go on after the switch, and a second rebuild agrees with them.
    for n in range(5):
        add_deal(cluster.store, n)
    cluster.wait_visible(cluster.store.head_position())
    again = rebuild_read_model(cluster.read_engine, KafkaFeed(consumer_config(cluster.settings)),
                               RebuildProgress(io.StringIO()), dry_run=True)
    assert again.mismatched == []
