"""POST → visible in the read API, at a steady offered rate.

Events are offered on a fixed schedule (open loop: a slow answer does not slow the offer).
Each is POSTed, then read back with `min_position` = its receipt's position; the latency is
from its scheduled time to the read's answer. Prints one JSON object on its last line.

    python bench/latency.py [--quick] [--rate 200] [--seconds 20]
                            [--mode embedded|kafka] [--backend sqlite|postgres]

`--mode embedded` runs `dealreg up` (SQLite files, or a fresh PostgreSQL database with
`--backend postgres`). `--mode kafka` runs the distributed shape on a fresh PostgreSQL
database: `dealreg registry` (POSTs), `dealreg relay` and `dealreg projections` (reads),
around a tansu broker. Fresh databases are dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
from service_process import (
    distributed_services,
    fresh_postgres_database,
    partner_headers,
    start_service,
    stop_service,
)

T = "2025-06-01T10:00:00+05:30"
WORKERS = 64  # events in flight at most
P99_TARGET_MS = 20.0
# Long enough that a read waiting for its position answers rather than giving up (409).
SERVICE_ENV = {"DEALREG_FRESHNESS_WAIT_SECONDS": "30"}


@contextmanager
def services(mode: str, backend: str, folder: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """Yields the write URL, the read URL and a partner's headers."""
    with ExitStack() as stack:
        database_url = None
        if mode == "kafka" or backend == "postgres":
            database_url = stack.enter_context(fresh_postgres_database())
        headers = partner_headers(folder, database_url)
        if mode == "kafka":
            assert database_url is not None
            write, read = stack.enter_context(distributed_services(folder, database_url,
                                                                         SERVICE_ENV))
            yield write, read, headers
            return
        process, url = start_service(folder, database_url, SERVICE_ENV)
        stack.callback(stop_service, process)
        yield url, url, headers


def measure(write_url: str, read_url: str, headers: dict[str, str], rate: float,
            total: int) -> tuple[list[float], int, float]:
    """Latencies of the events made visible, how many were not, and the seconds taken."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    # Clients are made before the clock starts: making one costs tens of milliseconds of CPU
    # (its TLS context), which would otherwise land on the first events' latencies.
    idle: queue.SimpleQueue[tuple[httpx.Client, httpx.Client]] = queue.SimpleQueue()
    for _ in range(WORKERS):
        idle.put((httpx.Client(base_url=write_url, headers=headers, timeout=60),
                  httpx.Client(base_url=read_url, headers=headers, timeout=60)))

    def post_and_read(body: dict) -> bool:
        write, read = pair = idle.get()
        try:
            response = write.post("/v1/events", json=body)
            if response.status_code != 201:
                return False
            return read.get("/v1/firms", params={"limit": 1, "min_position":
                                                 response.json()["position"]}).status_code == 200
        finally:
            idle.put(pair)

    # Warm-up: connects the relay's producer and the consumer group before the clock starts.
    if not post_and_read({"event_id": "bench-firm", "type": "firm_registered",
                          "occurred_at": T, "payload": {"code": "bench-jp", "name": "Bench",
                                                        "country": "JP",
                                                        "kind": "manufacturer"}}):
        raise SystemExit("the warm-up event did not become visible")

    def offer(n: int, due: float) -> None:
        nonlocal failures
        visible = post_and_read({
            "event_id": f"lat-{n}", "type": "deal_proposed", "occurred_at": T,
            "payload": {"title": "bench", "format": "equity_investment",
                        "sector": "electric_vehicles", "parties": ["bench-jp"]}})
        with lock:
            if visible:
                latencies.append(time.perf_counter() - due)
            else:
                failures += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        for n in range(total):
            due = started + n / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            pool.submit(offer, n, due)
    return latencies, failures, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a run under 60 seconds")
    parser.add_argument("--rate", type=float, default=200.0, help="events offered per second")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--mode", choices=("embedded", "kafka"), default="embedded")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite",
                        help="embedded mode's store (kafka mode always uses PostgreSQL)")
    args = parser.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 60.0)
    total = int(args.rate * seconds)
    backend = "postgres" if args.mode == "kafka" else args.backend
    with tempfile.TemporaryDirectory() as name, services(args.mode, backend,
                                                         Path(name)) as (write, read, headers):
        latencies, failures, elapsed = measure(write, read, headers, args.rate, total)
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1e3
    print(json.dumps({
        "benchmark": "latency",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"mode": args.mode, "store": backend, "offered_rate": args.rate,
                     "events": total, "seconds": seconds},
        "results": [
            {"metric": "post_to_visible_p50", "ours": round(statistics.median(latencies) * 1e3, 2),
             "baseline": None, "ratio": None, "unit": "ms"},
            {"metric": "post_to_visible_p99", "ours": round(p99, 2), "baseline": P99_TARGET_MS,
             "ratio": round(p99 / P99_TARGET_MS, 2), "unit": "ms (baseline: target)"},
            {"metric": "achieved_rate", "ours": round(total / elapsed, 1),
             "baseline": args.rate, "ratio": round(total / elapsed / args.rate, 3),
             "unit": "events/s"},
            {"metric": "not_visible", "ours": failures, "baseline": 0, "ratio": None,
             "unit": "events"},
        ],
    }))


if __name__ == "__main__":
    main()
