"""Audit at scale: the first signed tree head over a whole log, then verification, beside a
raw read of the same log in the same run, with the Python heap's peak of each (tracemalloc).
Bounded memory means the peaks stay flat from the smallest size to the largest: the walk
holds a page of events, the tree's frontier and one aggregate's chain, not an entry per
event or per aggregate (the old verification kept ~100 bytes per aggregate and event).

    python bench/audit_log.py [--quick] [--sizes 10000,100000]

Each size runs in its own process. Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workload import fill

from services.registry.adapters.event_store import open_event_store
from services.registry.audit.checkpoints import CheckpointStore, audit_database_url, extend_tree
from services.registry.audit.tree_head_key import tree_head_signer
from services.registry.audit.verification import verify_log
from services.shared.database import create_sql_engine
from services.shared.settings import Settings


def measured(work: Callable[[], Any]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak traced heap MB) of one call."""
    tracemalloc.start()
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return wall, cpu, peak / 1e6


def measure(size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as name:
        settings = Settings(data_dir=Path(name))
        store = open_event_store(settings)
        events = fill(store, size)
        checkpoints = CheckpointStore(create_sql_engine(audit_database_url(settings)))
        checkpoints.create_schema()
        signer = tree_head_signer(settings)

        def raw_read() -> None:
            after = 0
            while page := store.read_log(after, 1000):
                after = page[-1].id

        figures: dict[str, Any] = {"events": events}
        for name, work in (
            ("raw_read", raw_read),
            ("first_tree_head", lambda: extend_tree(store, checkpoints, signer)),
            ("verify", lambda: verify_log(store, checkpoints,
                                          public_key=signer.public_key)),
        ):
            wall, cpu, peak = measured(work)
            figures[name] = {"events_per_second": round(events / wall),
                             "cpu_ms_per_event": round(cpu * 1000 / events, 4),
                             "peak_heap_mb": round(peak, 2)}
        figures["coverage_lag_ms"] = coverage_lag(store, checkpoints, signer)
        report = verify_log(store, checkpoints)
        assert report.ok, report.failures[:3]
        store.close()
        return figures


def coverage_lag(store: Any, checkpoints: CheckpointStore, signer: Any,
                 writes: int = 200) -> dict[str, float]:
    """Milliseconds from a write's commit to the signed head covering it, with the write
    service's follower woken by the write as the API wakes it (p50, p99, max)."""
    from services.registry.audit.tree_head_follower import TreeHeadFollower
    from services.registry.domain.firm import Firm
    from services.registry.domain.recorded import Provenance

    follower = TreeHeadFollower(store, checkpoints, signer)
    follower.start()
    lags = []
    try:
        for n in range(writes):
            firm = Firm.register(f"lag-{n}", "Lag", "JP", "manufacturer", Provenance(
                datetime.now(UTC), "bench", f"lag-{n}"))
            position = store.save(firm)[-1].notification.id
            committed = time.perf_counter()
            follower.wake()
            while (latest := checkpoints.latest()) is None or latest.last_position < position:
                time.sleep(0.0005)
            lags.append((time.perf_counter() - committed) * 1000)
    finally:
        follower.stop()
    lags.sort()
    return {"p50": round(lags[len(lags) // 2], 2), "p99": round(lags[int(len(lags) * 0.99)], 2),
            "max": round(lags[-1], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k and 50k events")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return 0
    sizes = [10_000, 50_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    results = {}
    for size in sizes:
        run = subprocess.run([sys.executable, __file__, "--one", str(size)],
                             capture_output=True, text=True, check=True)
        results[size] = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{size:>9} events: " + ", ".join(
            f"{k} {v['events_per_second']}/s {v['peak_heap_mb']} MB"
            for k, v in results[size].items() if isinstance(v, dict) and "peak_heap_mb" in v)
            + f"; write -> covered {results[size]['coverage_lag_ms']} ms", file=sys.stderr)
    smallest, largest = results[sizes[0]], results[sizes[-1]]
    summary = {
        "benchmark": "audit_log", "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sizes": results,
        "verify_vs_raw_read": round(largest["verify"]["events_per_second"]
                                    / largest["raw_read"]["events_per_second"], 3),
        "verify_peak_growth": round(largest["verify"]["peak_heap_mb"]
                                    / smallest["verify"]["peak_heap_mb"], 2),
        "first_tree_head_peak_growth": round(largest["first_tree_head"]["peak_heap_mb"]
                                             / smallest["first_tree_head"]["peak_heap_mb"], 2),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
