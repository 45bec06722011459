"""Batch ingest over HTTP (`POST /v1/events/batch`, 100 events a request) beside the
library's own 100-event save on the same kind of store, in the same run. Prints one JSON
object on its last line.

    python bench/batch.py [--quick] [--batches N]
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from service_process import partner_headers, start_service

T = "2025-06-01T10:00:00+05:30"
BATCH = 100


class Counter(Aggregate):
    def __init__(self, note: str) -> None:
        self.note = note


def library_batch_rate(folder: Path, batches: int) -> float:
    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                           "SQLITE_DBNAME": str(folder / "baseline.db")})
    started = time.perf_counter()
    for _ in range(batches):
        app.save(*(Counter("x" * 300) for _ in range(BATCH)))
    return batches * BATCH / (time.perf_counter() - started)


def http_batch_rate(folder: Path, batches: int) -> float:
    headers = partner_headers(folder)
    process, url = start_service(folder)
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            client.post("/v1/events", json={
                "event_id": "bench-firm", "type": "firm_registered", "occurred_at": T,
                "payload": {"code": "bench-jp", "name": "Bench", "country": "JP",
                            "kind": "manufacturer"}})
            started = time.perf_counter()
            for b in range(batches):
                body = [{"event_id": f"b{b}-{n}", "type": "deal_proposed", "occurred_at": T,
                         "payload": {"title": "bench", "format": "equity_investment",
                                     "sector": "electric_vehicles", "parties": ["bench-jp"]}}
                        for n in range(BATCH)]
                answer = client.post("/v1/events/batch", json=body).json()
                assert answer["recorded"] == BATCH, answer
            return batches * BATCH / (time.perf_counter() - started)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run under 60 seconds")
    parser.add_argument("--batches", type=int, default=None)
    args = parser.parse_args()
    batches = args.batches or (10 if args.quick else 100)
    with tempfile.TemporaryDirectory() as name:
        baseline = library_batch_rate(Path(name), batches)
        ours = http_batch_rate(Path(name), batches)
    print(json.dumps({
        "benchmark": "batch",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"batches": batches, "events_per_batch": BATCH, "store": "sqlite"},
        "results": [{"metric": "batch_ingest", "ours": round(ours, 1),
                     "baseline": round(baseline, 1), "ratio": round(ours / baseline, 4),
                     "unit": "events/s"}],
    }))


if __name__ == "__main__":
    main()
