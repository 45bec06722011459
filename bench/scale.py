"""Cost at scale: append rate and by-sector / by-firm query latency with 10k, 100k and 1M
events stored, and peak memory at each size. Each size runs in its own process, so its
peak memory is its own. Prints one JSON object on its last line; the baseline of every
figure is the same figure at the smallest size.

    python bench/scale.py [--quick] [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import TypeAdapter
from workload import FIRMS, fill

from contracts.submissions_v1 import Submission
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.progress import SourceProgress
from services.projections.read_model.queries import ReadModelQueries
from services.projections.read_model.tables import TotalsDimension, create_read_schema
from services.registry.adapters.event_store import open_event_store
from services.registry.application.commands import RecordPartnerEvent
from services.registry.application.handlers import RecordingService
from services.registry.relay.contract_events import envelopes_from
from services.shared.database import create_sql_engine
from services.shared.settings import Settings

APPENDS = 300
QUERIES = 200
T = "2025-06-01T10:00:00+05:30"


def measure(size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        store = open_event_store(Settings(data_dir=folder))
        fill(store, size)
        engine = create_sql_engine(f"sqlite:///{folder / 'read.db'}")
        create_read_schema(engine)
        projector = ReadModelProjector(engine)
        after, head = 0, store.head_position()
        while after < head:
            page = store.read_log(after, 1000)
            projector.apply(envelopes_from(list(page), store.mapper),
                            [SourceProgress.of_log(page[-1].id)])
            after = page[-1].id

        service = RecordingService(store)
        submissions = TypeAdapter(Submission)
        code = FIRMS[0][0]
        started = time.perf_counter()
        for n in range(APPENDS):
            service.record(RecordPartnerEvent("bench", submissions.validate_python({
                "event_id": f"scale-{n}", "type": "deal_proposed", "occurred_at": T,
                "payload": {"title": "scale", "format": "equity_investment",
                            "sector": "recycling", "parties": [code]}})))
        append_rate = APPENDS / (time.perf_counter() - started)

        queries = ReadModelQueries(engine)
        timings: dict[str, list[float]] = {"by_sector": [], "by_firm": []}
        for _ in range(QUERIES):
            for metric, dimension in (("by_sector", TotalsDimension.SECTOR),
                                      ("by_firm", TotalsDimension.FIRM)):
                started = time.perf_counter()
                queries.pledge_totals(dimension)
                timings[metric].append(time.perf_counter() - started)
        service.committer.close()
        store.close()
    result = {"append_rate": append_rate,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    for metric, values in timings.items():
        values.sort()
        result[f"{metric}_p50_ms"] = statistics.median(values) * 1e3
        result[f"{metric}_p99_ms"] = values[int(len(values) * 0.99) - 1] * 1e3
    return result


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
                                             else "10000,100000,1000000")).split(",")]
    by_size = {}
    for size in sizes:
        child = subprocess.run([sys.executable, __file__, "--one", str(size)],
                               capture_output=True, text=True, check=True)
        by_size[size] = json.loads(child.stdout.strip().splitlines()[-1])
    smallest = by_size[sizes[0]]
    results = []
    for size in sizes[1:]:
        for metric, unit in (("append_rate", "events/s"), ("by_sector_p99_ms", "ms"),
                             ("by_firm_p99_ms", "ms"), ("peak_rss_mb", "MiB")):
            ours, base = by_size[size][metric], smallest[metric]
            results.append({"metric": f"{metric}@{size}", "ours": round(ours, 2),
                            "baseline": round(base, 2), "ratio": round(ours / base, 3),
                            "unit": f"{unit} (baseline: at {sizes[0]})"})
    print(json.dumps({
        "benchmark": "scale",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"sizes": sizes, "appends": APPENDS, "queries": QUERIES, "store": "sqlite"},
        "by_size": by_size,
        "results": results,
    }))


if __name__ == "__main__":
    main()
