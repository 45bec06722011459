"""Property: the pledge ledger's totals as of a day equal the totals folded from every deal's
history as of the end of that day (`pledge_totals_as_of`), for random histories whose events
have business dates in any order relative to their recording, applied in random batches.
Also: the ledger's tree (`rm_pledge_ledger_tree`) holds the sums of the day rows it says,
over-time lists exactly the groups counted at some bucket's end, and every reader of past
totals goes through `pledge_totals_past`, which reads the ledger only where it is exact."""

from __future__ import annotations

import random
import tempfile
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, event, select, text

from contracts.events_v1 import EventEnvelope
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.deal_history import PastBound
from services.projections.read_model.queries import Interval, ReadModelQueries, buckets
from services.projections.read_model.tables import (
    TotalsDimension,
    create_read_schema,
    pledge_ledger,
    pledge_ledger_tree,
    tree_nodes_holding,
    tree_nodes_summing,
)
from tests.unit.projections.test_past_state_property import History, step

DAY0 = date(2025, 1, 28)
DAYS = 70  # across three month ends, so month rows and day rows both count


def dated(envelopes: list[EventEnvelope], seed: int) -> list[EventEnvelope]:
    """The same log with each event's business time moved to a random moment of one of
    DAYS days: earlier or later than events recorded before it."""
    rng = random.Random(seed)
    return [e.model_copy(update={"occurred_at": datetime.combine(
        DAY0 + timedelta(days=rng.randrange(DAYS)),
        time(rng.randrange(24), rng.randrange(60), tzinfo=UTC))}) for e in envelopes]


def dated_in_order(envelopes: list[EventEnvelope], seed: int) -> list[EventEnvelope]:
    """The same log with business times that mostly follow it (0-2 days apart, so a batch
    usually extends each deal's history: the projector's appended path), and now and then
    one backdated by up to a week (its whole-history path)."""
    rng = random.Random(seed)
    moment = datetime.combine(DAY0, time(0, 0, tzinfo=UTC))
    dated_envelopes = []
    for envelope in envelopes:
        moment += timedelta(hours=rng.randrange(0, 48))
        at = moment - timedelta(days=rng.randrange(1, 8)) if rng.random() < 0.1 else moment
        dated_envelopes.append(envelope.model_copy(update={"occurred_at": at}))
    return dated_envelopes


def project_in_batches(engine: Engine, envelopes: list[EventEnvelope], seed: int) -> None:
    create_read_schema(engine)
    projector, rng, start = ReadModelProjector(engine), random.Random(seed), 0
    while start < len(envelopes):
        size = rng.randint(1, 6)
        projector.apply(envelopes[start:start + size])
        start += size


def ledger_rows(engine: Engine) -> list[tuple[object, ...]]:
    """The day and month rows, then the tree's, as stored (amounts' text)."""
    with engine.connect() as conn:
        return [tuple(str(v) for v in row) for table in (pledge_ledger, pledge_ledger_tree)
                for row in conn.execute(select(table).order_by(*table.primary_key.columns))]


def lowbit(node: int) -> int:
    return node & -node


def check_tree(engine: Engine) -> None:
    """Every stored tree node is the sum of the day rows of the days it covers (ordinals
    node - lowbit(node) + 1 to node), and no node that sums to something is missing."""
    with engine.connect() as conn:
        days = [row._mapping for row in conn.execute(
            select(pledge_ledger).where(pledge_ledger.c.period == "day"))]
        stored = {(row.dimension, row.node, row.group_key, row.currency):
                  (row.pledge_count, row.low, row.high, row.usd_low, row.usd_high)
                  for row in conn.execute(select(pledge_ledger_tree))}
    expected: dict[tuple[str, int, str, str], list[Any]] = {}
    for row in days:
        ordinal = date.fromisoformat(row["starts"]).toordinal()
        for node in tree_nodes_holding(date.fromordinal(ordinal)):
            assert node - lowbit(node) < ordinal <= node
            entry = expected.setdefault((row["dimension"], node, row["group_key"],
                                         row["currency"]), [0, *(Decimal(0),) * 4])
            for n, column in enumerate(("pledge_count", "low", "high", "usd_low", "usd_high")):
                entry[n] += row[column]
    assert stored == {key: tuple(values) for key, values in expected.items() if any(values)}


def check_ledger(queries: ReadModelQueries, days: list[date]) -> None:
    """The ledger's answers against the history fold's, for each of `days` and dimension;
    `pledge_totals_past` takes the ledger's for a day's end, and gives the same."""
    position = queries.position()
    check_tree(queries.engine)
    for dimension in TotalsDimension:
        for day in days:
            bound = PastBound(position, datetime.combine(day, time.max, tzinfo=UTC))
            folded = queries.pledge_totals_as_of(dimension, bound)
            assert queries.pledge_totals_on(dimension, day, position) == folded, \
                (dimension, day)
            assert queries.pledge_totals_past(dimension, bound, position) == folded
        # After the last business date, the ledger holds the live totals.
        assert queries.pledge_totals_on(dimension, DAY0 + timedelta(days=DAYS), position) == \
            queries.pledge_totals(dimension)


def sqlite_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA synchronous=OFF"))
    return engine


def check_batched_against_the_fold(envelopes: list[EventEnvelope], seed: int,
                                   offsets: list[int]) -> None:
    """Projected in random batches, the ledger gives the history fold's totals; built in one
    batch (as a rebuild would, where no deal has a stored history and every change is folded
    from the events themselves), it is the same, row for row."""
    with tempfile.TemporaryDirectory() as tmp:
        batched = sqlite_engine(Path(tmp) / "batched.db")
        whole = sqlite_engine(Path(tmp) / "whole.db")
        try:
            project_in_batches(batched, envelopes, seed)
            check_ledger(ReadModelQueries(batched),
                         [DAY0 + timedelta(days=offset) for offset in offsets])
            create_read_schema(whole)
            if envelopes:
                ReadModelProjector(whole).apply(envelopes)
            assert ledger_rows(batched) == ledger_rows(whole)
        finally:
            batched.dispose()
            whole.dispose()


def history_of(steps: list[tuple[str, int, int, int, int]]) -> History:
    history = History()
    for item in steps:
        history.apply(*item)
    return history


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=40), seed=st.integers(0, 2**32),
       offsets=st.lists(st.integers(-1, DAYS), min_size=1, max_size=6))
def test_ledger_as_of_a_day_equals_the_history_fold(
    steps: list[tuple[str, int, int, int, int]], seed: int, offsets: list[int]
) -> None:
    check_batched_against_the_fold(dated(history_of(steps).log.envelopes, seed), seed, offsets)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=40), seed=st.integers(0, 2**32),
       offsets=st.lists(st.integers(-1, 2 * DAYS), min_size=1, max_size=6))
def test_a_ledger_of_events_in_business_order_equals_the_history_fold(
    steps: list[tuple[str, int, int, int, int]], seed: int, offsets: list[int]
) -> None:
    """Mostly the projector's appended path (one business day per deal and batch)."""
    check_batched_against_the_fold(dated_in_order(history_of(steps).log.envelopes, seed),
                                   seed, offsets)


def test_over_time_buckets_are_the_totals_as_of_their_last_day(tmp_path: Path) -> None:
    history = History()
    rng = random.Random(11)
    for _ in range(120):
        history.apply(rng.choice(["firm", "deal", "pledge", "pledge", "pledge", "revise",
                                  "withdraw", "cancel"]),
                      rng.randrange(50), rng.randrange(50), rng.randrange(1, 10**9),
                      rng.randrange(10**9))
    engine = sqlite_engine(tmp_path / "read.db")
    project_in_batches(engine, dated(history.log.envelopes, 3), 5)
    queries = ReadModelQueries(engine)
    position = queries.position()
    seen = 0
    for interval in Interval:
        for dimension in TotalsDimension:
            spans = buckets(DAY0 + timedelta(days=3), DAY0 + timedelta(days=40), interval)
            items, total = queries.pledges_over_time(dimension, spans, position, 100, 0)
            assert total == len(items)
            seen += len(items)
            for n, (_, end) in enumerate(spans):
                on = {str(next(iter(item.values()))): item
                      for item in queries.pledge_totals_on(dimension, end, position)}
                for group in items:
                    key = str(next(iter(group.values())))
                    bucket = group["buckets"][n]
                    assert bucket["ends"] == end.isoformat()
                    expected = on.get(key)
                    if expected is None:
                        assert bucket["pledge_count"] == 0
                    else:
                        assert {k: bucket[k] for k in ("pledge_count", "usd", "by_currency")} \
                            == {k: expected[k] for k in ("pledge_count", "usd", "by_currency")}
    assert seen > 0
    engine.dispose()


def test_groups_over_time_are_those_counted_at_some_bucket_end(tmp_path: Path) -> None:
    """Over-time lists the groups with a counted pledge at the end of some bucket (not one
    pledged and withdrawn within a bucket), pages them by key, and counts all of them."""
    history = History()
    rng = random.Random(23)
    for _ in range(150):
        history.apply(rng.choice(["firm", "deal", "pledge", "pledge", "revise", "withdraw",
                                  "withdraw", "cancel"]),
                      rng.randrange(50), rng.randrange(50), rng.randrange(1, 10**9),
                      rng.randrange(10**9))
    engine = sqlite_engine(tmp_path / "read.db")
    project_in_batches(engine, dated(history.log.envelopes, 29), 31)
    queries = ReadModelQueries(engine)
    position = queries.position()
    for interval in Interval:
        for first, last in ((DAY0 - timedelta(days=2), DAY0 + timedelta(days=DAYS)),
                            (DAY0 + timedelta(days=20), DAY0 + timedelta(days=33))):
            spans = buckets(first, last, interval)
            for dimension in TotalsDimension:
                counted = {str(next(iter(item.values())))
                           for _, end in spans
                           for item in queries.pledge_totals_on(dimension, end, position)}
                items, total = queries.pledges_over_time(dimension, spans, position, 100, 0)
                keys = [str(next(iter(item.values()))) for item in items]
                assert (keys, total) == (sorted(counted), len(counted)), (interval, dimension)
                page, again = queries.pledges_over_time(dimension, spans, position, 2, 1)
                assert (page, again) == (items[1:3], total)
    engine.dispose()


def test_a_pledge_made_and_withdrawn_within_a_month_lists_its_firm_by_day_only(
    tmp_path: Path,
) -> None:
    from tests.unit.projections.envelopes import EventLog, money, usd

    log = EventLog()
    log.firm("toyota", "JP")
    log.firm("suzuki", "JP")
    deal = log.deal("recycling", "joint_venture", ["toyota", "suzuki"])
    log.pledge(deal, "p1", "toyota", money("10", "20", "USD"), usd("10", "20"))
    log.withdraw(deal, "p1")
    log.pledge(deal, "p2", "suzuki", money("5", "6", "USD"), usd("5", "6"))
    days = [date(2025, 2, 1)] * 3 + [date(2025, 2, 2), date(2025, 2, 5), date(2025, 3, 10)]
    envelopes = [e.model_copy(update={"occurred_at": datetime.combine(
        day, time(12), tzinfo=UTC)}) for e, day in zip(log.envelopes, days, strict=True)]
    engine = sqlite_engine(tmp_path / "read.db")
    project_in_batches(engine, envelopes, 1)
    queries = ReadModelQueries(engine)
    position = queries.position()
    window = (date(2025, 2, 1), date(2025, 3, 31))

    def firms_of(interval: Interval, since: date = window[0]) -> list[tuple[str, list[int]]]:
        items, _ = queries.pledges_over_time(
            TotalsDimension.FIRM, buckets(since, window[1], interval), position, 100, 0)
        return [(item["firm"]["code"], [b["pledge_count"] for b in item["buckets"]])
                for item in items]

    assert firms_of(Interval.MONTH) == [("suzuki", [0, 1])]
    assert firms_of(Interval.QUARTER) == [("suzuki", [1])]
    by_day = dict(firms_of(Interval.DAY))
    assert by_day["toyota"][:6] == [0, 1, 1, 1, 0, 0]
    assert sum(by_day["toyota"]) == 3 and by_day["suzuki"][-1] == 1
    # Counted before a window, not at the end of any of its buckets: not listed.
    assert [code for code, _ in firms_of(Interval.DAY, date(2025, 2, 5))] == ["suzuki"]
    assert [code for code, _ in firms_of(Interval.DAY, date(2025, 2, 4))] == \
        ["suzuki", "toyota"]
    engine.dispose()


def test_tree_nodes_tile_the_days_up_to_a_day_and_hold_exactly_its_sums() -> None:
    rng = random.Random(5)
    days = [date.min, date(1, 1, 2), date(1900, 1, 1), date(2025, 2, 28), date(2199, 12, 31),
            date.max, *(date.fromordinal(rng.randrange(1, date.max.toordinal()))
                        for _ in range(300))]
    for day in days:
        summing = tree_nodes_summing(day)
        # Ranges (node - lowbit(node), node], from the day down, tile 1..ordinal exactly.
        top = day.toordinal()
        for node in summing:
            assert node == top
            top = node - lowbit(node)
        assert top == 0 and len(summing) <= 22
        holding = set(tree_nodes_holding(day))
        assert len(holding) <= 22 and all(n <= date.max.toordinal() for n in holding)
        # A change on `other` is in the sum as of `day` exactly when other <= day.
        for other in (day, *(date.fromordinal(rng.randrange(1, date.max.toordinal()))
                             for _ in range(20))):
            shared = holding & set(tree_nodes_summing(other))
            assert len(shared) == (1 if day <= other else 0), (day, other)


class Spy(ReadModelQueries):
    """Which way `pledge_totals_past` answered."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.ways: list[str] = []

    def pledge_totals_on(self, dimension: TotalsDimension, day: date, up_to_position: int
                         ) -> list[dict[str, Any]]:
        self.ways.append(f"ledger {day.isoformat()} {up_to_position}")
        return super().pledge_totals_on(dimension, day, up_to_position)

    def pledge_totals_as_of(self, dimension: TotalsDimension, bound: PastBound
                            ) -> list[dict[str, Any]]:
        self.ways.append("fold")
        return super().pledge_totals_as_of(dimension, bound)


def test_past_totals_read_the_ledger_only_at_a_days_end_as_known_now(tmp_path: Path) -> None:
    from datetime import timezone

    history = History()
    for item in [("firm", 0, 0, 1, 1), ("deal", 0, 0, 1, 1), ("pledge", 0, 0, 5, 5)]:
        history.apply(*item)
    engine = sqlite_engine(tmp_path / "read.db")
    project_in_batches(engine, dated(history.log.envelopes, 2), 3)
    spy = Spy(engine)
    now = spy.position()
    day = DAY0 + timedelta(days=5)
    end = datetime.combine(day, time.max, tzinfo=UTC)
    india = timezone(timedelta(hours=5, minutes=30))
    cases = [
        (PastBound(now, end), f"ledger {day} {now}"),
        (PastBound(now + 1, end), f"ledger {day} {now + 1}"),
        # The same instant written with an offset is still the end of that UTC day.
        (PastBound(now, end.astimezone(india)), f"ledger {day} {now}"),
        (PastBound(now, end - timedelta(microseconds=1)), "fold"),  # within the day
        (PastBound(now, datetime.combine(day, time.max, tzinfo=india)), "fold"),
        (PastBound(now - 1, end), "fold"),  # as known at an earlier position
        (PastBound(now), "fold"),  # recorded time
    ]
    for bound, way in cases:
        spy.ways.clear()
        assert spy.pledge_totals_past(TotalsDimension.SECTOR, bound, now) == \
            spy.pledge_totals_as_of(TotalsDimension.SECTOR, bound)
        assert spy.ways[0] == way, bound
    with engine.begin() as conn:  # a ledger not rebuilt since it was added
        conn.execute(text("INSERT INTO rm_ledger_incomplete (since_position) VALUES (1)"))
    spy.ways.clear()
    spy.pledge_totals_past(TotalsDimension.SECTOR, PastBound(now, end), now)
    assert spy.ways == ["fold"]
    engine.dispose()


def test_the_pages_totals_choose_as_the_api_does(tmp_path: Path) -> None:
    from services.projections.pages.screens import totals
    from services.projections.pages.time_travel import time_travel

    engine = sqlite_engine(tmp_path / "read.db")
    create_read_schema(engine)
    spy = Spy(engine)
    totals(spy, TotalsDimension.FIRM, time_travel(spy, {"as_of": "2025-02-01"}))
    totals(spy, TotalsDimension.FIRM, time_travel(spy, {"as_of": "2025-02-01T10:00:00Z"}))
    totals(spy, TotalsDimension.FIRM, time_travel(spy, {"recorded_as_of": "0"}))
    assert spy.ways == ["ledger 2025-02-01 0", "fold", "fold"]
    engine.dispose()


@pytest.mark.parametrize("dropped", ["rm_pledge_ledger", "rm_pledge_ledger_tree"])
def test_a_ledger_table_new_to_a_read_model_with_events_marks_it_incomplete(
    tmp_path: Path, dropped: str
) -> None:
    history = History()
    for item in [("firm", 0, 0, 1, 1), ("deal", 0, 0, 1, 1), ("pledge", 0, 0, 5, 5)]:
        history.apply(*item)
    engine = sqlite_engine(tmp_path / "read.db")
    project_in_batches(engine, history.log.envelopes, 3)
    queries = ReadModelQueries(engine)
    assert queries.ledger_complete()
    with engine.begin() as conn:  # a read model from before that table
        conn.execute(text(f"DROP TABLE {dropped}"))
    create_read_schema(engine)
    assert not queries.ledger_complete()
    create_read_schema(engine)  # started again before a rebuild: still marked, once
    with engine.connect() as conn:
        marks = conn.execute(text("SELECT since_position FROM rm_ledger_incomplete")).all()
    assert marks == [(queries.position(),)]
    # An empty read model gets its tables complete.
    fresh = sqlite_engine(tmp_path / "fresh.db")
    create_read_schema(fresh)
    assert ReadModelQueries(fresh).ledger_complete()
    engine.dispose()
    fresh.dispose()
