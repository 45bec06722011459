"""Pledge totals by business date at 10k / 100k (/ 1M) events: p50/p99 of live totals (the
baseline), `as_of` a date (`pledge_totals_past`, which the API and the pages call: the
ledger's tree), `as_of` a time within a day (the history fold, what every `as_of` cost before
the ledger) and `GET /v1/pledges/over-time`'s query (monthly, over the whole history), by
sector and by firm, side by side. Each size runs in its own process. Prints one JSON object
on its last line.

Over-time is measured twice: with the route's default page of groups (`limit` 20, what a
client that names no limit gets; by sector all 5 fit) and with its largest page (100: all
80 firms). Live totals have no pages, so by firm the default page answers 20 firms x the
buckets, the largest 80 x the buckets, against live's 80 totals: the first is the request a
client makes by default, the second shows how the cost grows with the answer (80 firms x 23
months at 1M is 23 times live's answer).

Like the service, the bench freezes the objects it has loaded (`gc.freeze()`) before it
times the queries.

The queries are timed in rounds, each round calling every query once, so that load from
elsewhere on the machine falls on all of them alike, not on whichever ran during it.

    python bench/over_time.py [--quick] [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import gc
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
from services.projections.query_api.routes import MAX_OVER_TIME_GROUPS
from services.projections.read_model.deal_history import PastBound
from services.projections.read_model.progress import SourceProgress
from services.projections.read_model.queries import Interval, ReadModelQueries, buckets
from services.projections.read_model.tables import TotalsDimension, create_read_schema
from services.registry.adapters.event_store import open_event_store
from services.shared.database import create_sql_engine
from services.shared.settings import Settings

QUERIES = 200
FOLD_QUERIES = 5  # the history fold is slow: a few calls suffice for its figure
DEFAULT_GROUPS = 20  # GET /v1/pledges/over-time's default `limit`
QUERY_NAMES = ("live", "as_of_date", "over_time_month", "over_time_month_all",
               "as_of_time_fold")


def timed(calls: dict[str, Callable[[], Any]], rounds: int) -> dict[str, dict[str, float]]:
    """p50 and p99 of each call, timed in `rounds` rounds that call each once."""
    values: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            values[name].append(time.perf_counter() - started)
    figures = {}
    for name, measured in values.items():
        measured.sort()
        figures[name] = {"p50_ms": statistics.median(measured) * 1e3,
                         "p99_ms": measured[max(int(len(measured) * 0.99) - 1, 0)] * 1e3}
    return figures


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
        # As the service does once it has loaded (services/cli.py `_serve`): full collections
        # then skip what lives as long as the process, and stop pausing the reads.
        gc.collect()
        gc.freeze()
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
        end_of_middle = datetime.combine(middle, datetime.max.time(), tzinfo=UTC)
        for dimension in (TotalsDimension.SECTOR, TotalsDimension.FIRM):
            d = dimension.value
            calls: dict[str, Callable[[], Any]] = {
                "live": partial(queries.pledge_totals, dimension),
                "as_of_date": partial(queries.pledge_totals_past, dimension,
                                      PastBound(position, end_of_middle), position),
                "over_time_month": partial(queries.pledges_over_time, dimension, months,
                                           position, DEFAULT_GROUPS, 0),
                "over_time_month_all": partial(queries.pledges_over_time, dimension, months,
                                               position, MAX_OVER_TIME_GROUPS, 0),
            }
            # The slow fold on its own, after the rounds, so as not to disturb them.
            fold = {"as_of_time_fold": partial(queries.pledge_totals_as_of, dimension,
                                               PastBound(position, within_day))}
            for query, figures in (timed(calls, QUERIES) | timed(fold, FOLD_QUERIES)).items():
                result[f"{query}_{d}"] = figures
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
    print(f"{'events':>9} {'dimension':>9} {'query':>19} {'p50 ms':>9} {'p99 ms':>9} "
          f"{'p50 / live':>10} {'p99 / live':>10}")
    for size in sizes:
        child = subprocess.run([sys.executable, __file__, "--one", str(size)],
                               capture_output=True, text=True, check=True)
        measured = by_size[size] = json.loads(child.stdout.strip().splitlines()[-1])
        for d in ("sector", "firm"):
            live = measured[f"live_{d}"]
            for query in QUERY_NAMES:
                figures = measured[f"{query}_{d}"]
                ratio = figures["p99_ms"] / live["p99_ms"]
                median_ratio = figures["p50_ms"] / live["p50_ms"]
                print(f"{size:>9} {d:>9} {query:>19} {figures['p50_ms']:>9.2f} "
                      f"{figures['p99_ms']:>9.2f} {median_ratio:>10.1f} {ratio:>10.1f}")
                if query != "live":
                    results.append({"metric": f"{query}_{d}_p99@{size}",
                                    "ours": round(figures["p99_ms"], 3),
                                    "baseline": round(live["p99_ms"], 3),
                                    "ratio": round(ratio, 2), "unit": "ms (baseline: live)"})
    print(json.dumps({
        "benchmark": "over_time",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"sizes": sizes, "queries": QUERIES, "fold_queries": FOLD_QUERIES,
                     "over_time_groups": [DEFAULT_GROUPS, MAX_OVER_TIME_GROUPS],
                     "store": "sqlite"},
        "by_size": by_size, "results": results,
    }))


if __name__ == "__main__":
    main()
