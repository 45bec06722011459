"""HTTP single-event appends against the embedded service, beside the library's own save rate.

The service runs as `dealreg up` in its own process; the baseline saves bare aggregates with
the library on the same kind of store (a fresh SQLite file, or with `--backend postgres` a
fresh PostgreSQL database, dropped afterwards), in the same run, so the ratio holds on a
noisy machine. Prints one JSON object on its last line.

    python bench/append.py [--quick] [--events N] [--concurrency C] [--deals D]
                           [--backend sqlite|postgres]

Besides the rate, it reports the CPU the service spends per recorded event: its process and
its children (the embedded projection feed), from the first pledge until the read model
shows the last one, a figure far steadier than wall-clock rates on a shared machine. With
--deals 20 each deal holds many pledges, with --deals 1000 few: the cost per event should
not depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import httpx
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from service_process import fresh_postgres_database, partner_headers, start_service, stop_service

from services.shared.settings import Settings

T = "2025-06-01T10:00:00+05:30"
DEALS = 100


class Counter(Aggregate):
    """A bare aggregate with ~1 KB of state change, for the library's baseline."""

    def __init__(self, note: str) -> None:
        self.note = note


def library_saves_per_second(data_dir: Path, database_url: str | None, events: int) -> float:
    """The library's own single-event save rate, one aggregate per save, on the service's
    kind of store (on PostgreSQL: the same database, a table of its own)."""
    if database_url is None:
        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
               "SQLITE_DBNAME": str(data_dir / "baseline.db")}
    else:
        env = Settings(database_url=database_url).event_store_env()
    app = Application(env=env)
    try:
        started = time.perf_counter()
        for _ in range(events):
            app.save(Counter("x" * 1000))
        return events / (time.perf_counter() - started)
    finally:
        app.close()


def tree_cpu_seconds(pid: int) -> float:
    """User and system CPU of a process and all its descendants, from /proc."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    stack.extend(int(child) for child in children.read().split())
        except FileNotFoundError:
            continue
    return total / os.sysconf("SC_CLK_TCK")


def http_appends(data_dir: Path, database_url: str | None, events: int,
                 concurrency: int, deals: int = DEALS) -> tuple[float, list[float], float]:
    headers = partner_headers(data_dir, database_url)
    process, url = start_service(data_dir, database_url)
    # Clients are made before the clock starts: each costs tens of milliseconds of CPU.
    idle: queue.SimpleQueue[httpx.Client] = queue.SimpleQueue()
    for _ in range(concurrency):
        idle.put(httpx.Client(base_url=url, headers=headers, timeout=30))

    positions: list[int] = []  # list.append is atomic: the pool's threads share it

    def post(body: dict) -> float:
        client = idle.get()
        try:
            started = time.perf_counter()
            response = client.post("/v1/events", json=body)
            elapsed = time.perf_counter() - started
        finally:
            idle.put(client)
        assert response.status_code == 201, response.text
        positions.append(response.json()["position"])
        return elapsed

    try:
        for code in ("bench-jp", "bench-in"):
            post({"event_id": f"f-{code}", "type": "firm_registered", "occurred_at": T,
                  "payload": {"code": code, "name": code, "country": "JP",
                              "kind": "manufacturer"}})
        deal_ids = [str(uuid4()) for _ in range(deals)]
        for n, deal_id in enumerate(deal_ids):
            post({"event_id": f"d-{n}", "type": "deal_proposed", "occurred_at": T,
                  "payload": {"deal_id": deal_id, "title": "bench",
                              "format": "equity_investment", "sector": "electric_vehicles",
                              "parties": ["bench-jp", "bench-in"]}})

        # Pledges go round-robin to existing deals, as partners' updates would.
        def pledge(n: int) -> float:
            return post({"event_id": f"p-{n}", "type": "pledge_made", "occurred_at": T,
                         "payload": {"deal_id": deal_ids[n % deals], "pledge_id": f"p-{n}",
                                     "firm": "bench-jp",
                                     "amount": {"low": "1000000", "high": "2000000",
                                                "currency": "USD"}}})

        cpu_before = tree_cpu_seconds(process.pid)
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            latencies = list(pool.map(pledge, range(events)))
        rate = events / (time.perf_counter() - started)
        with httpx.Client(base_url=url, headers=headers, timeout=30) as reader:
            while reader.get("/v1/pledges/by-sector", params={
                    "min_position": max(positions)}).status_code != 200:
                pass  # each answer waits up to the freshness bound for the feed
        cpu_ms = (tree_cpu_seconds(process.pid) - cpu_before) * 1000 / events
    finally:
        stop_service(process)
    return rate, latencies, cpu_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run under 60 seconds")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--deals", type=int, default=DEALS,
                        help="deals the pledges are spread over (fewer: larger deals)")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    events = args.events or (500 if args.quick else 5000)
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        database_url = (stack.enter_context(fresh_postgres_database())
                        if args.backend == "postgres" else None)
        baseline = library_saves_per_second(folder, database_url, events)
        ours, latencies, cpu_ms = http_appends(folder, database_url, events, args.concurrency,
                                               args.deals)
    latencies.sort()
    result = {
        "benchmark": "append",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"events": events, "concurrency": args.concurrency,
                     "store": args.backend,
                     "deals": args.deals,
                     "transport": "HTTP/1.1 keep-alive to dealreg up"},
        "results": [
            {"metric": f"http_appends_c{args.concurrency}", "ours": round(ours, 1),
             "baseline": round(baseline, 1), "ratio": round(ours / baseline, 3),
             "unit": "events/s"},
            {"metric": "cpu_per_event", "ours": round(cpu_ms, 3), "baseline": None,
             "ratio": None, "unit": "ms (service and feed processes)"},
            {"metric": "latency_p50", "ours": round(statistics.median(latencies) * 1000, 2),
             "baseline": None, "ratio": None, "unit": "ms"},
            {"metric": "latency_p99",
             "ours": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
             "baseline": None, "ratio": None, "unit": "ms"},
        ],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
