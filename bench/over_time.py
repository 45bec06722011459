"""Pledge totals by business date at 10k / 100k (/ 1M) events: p50/p99 of live totals (the
baseline), `as_of` a date (the ledger, rm_pledge_ledger), `as_of` a time within a day (the
history fold, what every `as_of` cost before the ledger) and `GET /v1/pledges/over-time`'s
query (monthly, over the whole history), by sector and by firm, side by side. Each size runs
in its own process. Prints one JSON object on its last line.

    python bench/over_time.py [--quick] [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from workload import START, fill

from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.deal_history import PastBound
from services.projections.read_model.progress import SourceProgress
from services.projections.read_model.queries import Interval, ReadModelQueries, buckets
from services.projections.read_model.tables import TotalsDimension, create_read_schema
from services.registry.adapters.event_store import open_event_store
from services.shared.database import create_sql_engine
from services.shared.settings import Settings

QUERIES = 200
FOLD_QUERIES = 5  # the history fold is slow: a few calls suffice for its figure


def timed(call: Callable[[], Any], times: int) -> dict[str, float]:
    values = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        values.append(time.perf_counter() - started)
    values.sort()
    return {"p50_ms": statistics.median(values) * 1e3,
            "p99_ms": values[max(int(len(values) * 0.99) - 1, 0)] * 1e3}


def measure(size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        store = open_event_store(Settings(data_dir=folder))
        fill(store, size)
        engine = create_sql_engine(f"sqlite:///{folder / 'read.db'}")
        create_read_schema(engine)
        projector = ReadModelProjector(engine)
        after, head = 0, store.head_position()
        started = time.perf_counter()
        while after < head:
            page = store.read_log(after, 1000)
            projector.apply(envelopes_from(list(page), store.mapper),
                            [SourceProgress.of_log(page[-1].id)])
            after = page[-1].id
        projected = time.perf_counter() - started
        store.close()
        queries = ReadModelQueries(engine)
        position = queries.position()
        # The workload's business times are one minute apart: the history spans size minutes.
        last_day = (START + timedelta(minutes=size)).date()
        middle = (START + timedelta(minutes=size // 2)).date()
        within_day = datetime.combine(middle, datetime.min.time(), tzinfo=UTC) \
            + timedelta(hours=12)
        months = buckets(START.date(), last_day, Interval.MONTH)
        result: dict[str, Any] = {"events": head, "projection_s": projected,
                                  "days": (last_day - START.date()).days + 1}
        for dimension in (TotalsDimension.SECTOR, TotalsDimension.FIRM):
            d = dimension.value
            calls: dict[str, tuple[Callable[[], Any], int]] = {
                "live": (partial(queries.pledge_totals, dimension), QUERIES),
                "as_of_date": (partial(queries.pledge_totals_on, dimension, middle, position),
                               QUERIES),
                "over_time_month": (partial(queries.pledges_over_time, dimension, months,
                                            position, 100, 0), QUERIES),
                "as_of_time_fold": (partial(queries.pledge_totals_as_of, dimension,
                                            PastBound(position, within_day)), FOLD_QUERIES),
            }
            for query, (call, times) in calls.items():
                result[f"{query}_{d}"] = timed(call, times)
    return result


def envelopes_from(page: list[Any], mapper: Any) -> Any:
    from services.registry.relay.contract_events import envelopes_from as translate
    return translate(page, mapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run under 60 seconds")
    parser.add_argument("--sizes", default=None)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    sizes = [int(s) for s in (args.sizes or ("2000,10000" if args.quick
                                             else "10000,100000")).split(",")]
    by_size = {}
    results = []
    print(f"{'events':>9} {'dimension':>9} {'query':>18} {'p50 ms':>9} {'p99 ms':>9} "
          f"{'p99 / live':>10}")
    for size in sizes:
        child = subprocess.run([sys.executable, __file__, "--one", str(size)],
                               capture_output=True, text=True, check=True)
        measured = by_size[size] = json.loads(child.stdout.strip().splitlines()[-1])
        for d in ("sector", "firm"):
            live = measured[f"live_{d}"]
            for query in ("live", "as_of_date", "over_time_month", "as_of_time_fold"):
                figures = measured[f"{query}_{d}"]
                ratio = figures["p99_ms"] / live["p99_ms"]
                print(f"{size:>9} {d:>9} {query:>18} {figures['p50_ms']:>9.2f} "
                      f"{figures['p99_ms']:>9.2f} {ratio:>10.1f}")
                if query != "live":
                    results.append({"metric": f"{query}_{d}_p99@{size}",
                                    "ours": round(figures["p99_ms"], 3),
                                    "baseline": round(live["p99_ms"], 3),
                                    "ratio": round(ratio, 2), "unit": "ms (baseline: live)"})
    print(json.dumps({
        "benchmark": "over_time",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"sizes": sizes, "queries": QUERIES, "fold_queries": FOLD_QUERIES,
                     "store": "sqlite"},
        "by_size": by_size, "results": results,
    }))


if __name__ == "__main__":
    main()
