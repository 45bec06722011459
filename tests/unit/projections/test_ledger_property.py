"""Property: the pledge ledger's totals as of a day equal the totals folded from every deal's
history as of the end of that day (`pledge_totals_as_of`), for random histories whose events
have business dates in any order relative to their recording, applied in random batches."""

from __future__ import annotations

import random
import tempfile
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, event, select

from contracts.events_v1 import EventEnvelope
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.deal_history import PastBound
from services.projections.read_model.queries import Interval, ReadModelQueries, buckets
from services.projections.read_model.tables import (
    TotalsDimension,
    create_read_schema,
    pledge_ledger,
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


def project_in_batches(engine: Engine, envelopes: list[EventEnvelope], seed: int) -> None:
    create_read_schema(engine)
    projector, rng, start = ReadModelProjector(engine), random.Random(seed), 0
    while start < len(envelopes):
        size = rng.randint(1, 6)
        projector.apply(envelopes[start:start + size])
        start += size


def ledger_rows(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(str(v) for v in row) for row in conn.execute(
            select(pledge_ledger).order_by(*pledge_ledger.primary_key.columns))]


def check_ledger(queries: ReadModelQueries, days: list[date]) -> None:
    """The ledger's answers against the history fold's, for each of `days` and dimension."""
    position = queries.position()
    for dimension in TotalsDimension:
        for day in days:
            bound = PastBound(position, datetime.combine(day, time.max, tzinfo=UTC))
            assert queries.pledge_totals_on(dimension, day, position) == \
                queries.pledge_totals_as_of(dimension, bound), (dimension, day)
        # After the last business date, the ledger holds the live totals.
        assert queries.pledge_totals_on(dimension, DAY0 + timedelta(days=DAYS), position) == \
            queries.pledge_totals(dimension)


def sqlite_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA synchronous=OFF"))
    return engine


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=40), seed=st.integers(0, 2**32),
       offsets=st.lists(st.integers(-1, DAYS), min_size=1, max_size=6))
def test_ledger_as_of_a_day_equals_the_history_fold(
    steps: list[tuple[str, int, int, int, int]], seed: int, offsets: list[int]
) -> None:
    history = History()
    for item in steps:
        history.apply(*item)
    envelopes = dated(history.log.envelopes, seed)
    with tempfile.TemporaryDirectory() as tmp:
        batched = sqlite_engine(Path(tmp) / "batched.db")
        whole = sqlite_engine(Path(tmp) / "whole.db")
        try:
            project_in_batches(batched, envelopes, seed)
            check_ledger(ReadModelQueries(batched),
                         [DAY0 + timedelta(days=offset) for offset in offsets])
            # Built in one batch (as a rebuild would), the ledger is the same, row for row.
            create_read_schema(whole)
            if envelopes:
                ReadModelProjector(whole).apply(envelopes)
            assert ledger_rows(batched) == ledger_rows(whole)
        finally:
            batched.dispose()
            whole.dispose()


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
