"""POST → visible in the read API, at a steady offered rate, embedded mode.

Events are offered on a fixed schedule (open loop: a slow answer does not slow the offer).
Each is POSTed, then read back with `min_position` = its receipt's position; the latency is
from its scheduled time to the read's answer. Prints one JSON object on its last line.

    python bench/latency.py [--quick] [--rate 200] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
from service_process import partner_headers, start_service

T = "2025-06-01T10:00:00+05:30"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run under 60 seconds")
    parser.add_argument("--rate", type=float, default=200.0, help="events offered per second")
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 60.0)
    total = int(args.rate * seconds)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        headers = partner_headers(folder)
        process, url = start_service(folder)
        local = threading.local()
        latencies: list[float] = []
        lock = threading.Lock()

        def client() -> httpx.Client:
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=url, headers=headers, timeout=60)
            return local.client

        client().post("/v1/events", json={
            "event_id": "bench-firm", "type": "firm_registered", "occurred_at": T,
            "payload": {"code": "bench-jp", "name": "Bench", "country": "JP",
                        "kind": "manufacturer"}})

        def offer(n: int, due: float) -> None:
            response = client().post("/v1/events", json={
                "event_id": f"lat-{n}", "type": "deal_proposed", "occurred_at": T,
                "payload": {"title": "bench", "format": "equity_investment",
                            "sector": "electric_vehicles", "parties": ["bench-jp"]}})
            position = response.json()["position"]
            client().get("/v1/firms", params={"limit": 1, "min_position": position})
            with lock:
                latencies.append(time.perf_counter() - due)

        started = time.perf_counter()
        try:
            with ThreadPoolExecutor(64) as pool:
                for n in range(total):
                    due = started + n / args.rate
                    time.sleep(max(0.0, due - time.perf_counter()))
                    pool.submit(offer, n, due)
            elapsed = time.perf_counter() - started
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=15)
    latencies.sort()
    print(json.dumps({
        "benchmark": "latency",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"mode": "embedded", "store": "sqlite", "offered_rate": args.rate,
                     "events": total, "seconds": seconds},
        "results": [
            {"metric": "post_to_visible_p50", "ours": round(statistics.median(latencies) * 1e3, 2),
             "baseline": None, "ratio": None, "unit": "ms"},
            {"metric": "post_to_visible_p99",
             "ours": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1e3, 2),
             "baseline": 20.0, "ratio": round(latencies[int(len(latencies) * 0.99) - 1] * 1e3
                                              / 20.0, 2), "unit": "ms (baseline: target)"},
            {"metric": "achieved_rate", "ours": round(total / elapsed, 1),
             "baseline": args.rate, "ratio": round(total / elapsed / args.rate, 3),
             "unit": "events/s"},
        ],
    }))


if __name__ == "__main__":
    main()
