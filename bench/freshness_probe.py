"""Read-your-writes probe of the distributed mode: write → read pairs with `min_position`.

Writers POST pledges to their deals through `dealreg registry`; after each POST the deal is
read from one of the running `dealreg projections` instances (round robin) with
`min_position` = the receipt's position. An answer whose deal version is below the
receipt's aggregate version is stale (must be 0). Four phases over one topic of 4
partitions: 1 instance; a 2nd joins mid-phase; a 3rd joins mid-phase; one leaves mid-phase.
The read latency is compared with a plain read of the same deal (no `min_position`) just
after. Prints one JSON object on its last line.

    python bench/freshness_probe.py [--quick] [--pairs 10000] [--writers 4]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from service_process import (
    TANSU_CONSUMER_ENV,
    TansuBroker,
    fresh_postgres_database,
    start_dealreg,
    stop_service,
)

from services.shared.api_keys import ApiKeyStore, Role
from services.shared.database import create_sql_engine
from services.shared.kafka_topics import create_topics
from services.shared.settings import Settings

T = "2025-06-01T10:00:00+05:30"
DEALS_PER_WRITER = 4
PARTITIONS = 4
SERVICE_ENV = {"DEALREG_FRESHNESS_WAIT_SECONDS": "30"}


def keys(data_dir: Path, database_url: str) -> tuple[dict[str, str], dict[str, str]]:
    engine = create_sql_engine(Settings(data_dir=data_dir,
                                        database_url=database_url).registry_tables_url())
    store = ApiKeyStore(engine)
    store.create_schema()
    try:
        return ({"Authorization": f"Bearer {store.create('probe', Role.PARTNER)}"},
                {"Authorization": f"Bearer {store.create('probe-reader', Role.READER)}"})
    finally:
        engine.dispose()


class Cluster:
    """The broker, one registry, one relay and up to three projection instances."""

    def __init__(self, stack: ExitStack, folder: Path) -> None:
        database_url = stack.enter_context(fresh_postgres_database())
        broker = stack.enter_context(TansuBroker(tempfile.mkdtemp(prefix="probe-tansu-")))
        topic = f"probe.events.{uuid.uuid4().hex[:8]}"
        create_topics(broker.bootstrap, topic, f"{topic}.dlq", PARTITIONS)
        self.env = {"DEALREG_DATABASE_URL": database_url, "DEALREG_DATA_DIR": str(folder),
                    "DEALREG_KAFKA_BOOTSTRAP": broker.bootstrap, "DEALREG_KAFKA_TOPIC": topic,
                    **TANSU_CONSUMER_ENV, **SERVICE_ENV}
        self.writer, self.reader = keys(folder, database_url)
        self.processes: list[Any] = []
        stack.callback(self.stop_all)
        _, self.write_url = self._start("registry")
        self._start("relay")
        self.readers: list[tuple[Any, str]] = []
        self.lock = threading.Lock()
        self.add_projections()

    def _start(self, command: str) -> tuple[Any, str]:
        process, url = start_dealreg([command], self.env)
        self.processes.append(process)
        return process, url

    def add_projections(self) -> None:
        started = self._start("projections")
        with self.lock:
            self.readers.append(started)

    def remove_projections(self) -> None:
        with self.lock:
            process, _ = self.readers.pop(0)
        stop_service(process)  # leaves the group: its partitions move to the others

    def read_urls(self) -> list[str]:
        with self.lock:
            return [url for _, url in self.readers]

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                stop_service(process)


@dataclass
class Results:
    pairs: int = 0
    stale: int = 0
    not_visible: int = 0
    fresh_read: list[float] = field(default_factory=list)
    plain_read: list[float] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_writer(cluster: Cluster, results: Results, writer: int, pairs: int,
               turn: Iterator[int]) -> None:
    write = httpx.Client(base_url=cluster.write_url, headers=cluster.writer, timeout=60)
    reads: dict[str, httpx.Client] = {}

    def post(body: dict[str, Any]) -> dict[str, Any]:
        response = write.post("/v1/events", json=body)
        if response.status_code != 201:
            raise SystemExit(f"POST refused: {response.status_code} {response.text}")
        return dict(response.json())

    deals = [post({"event_id": f"probe-deal-{writer}-{d}", "type": "deal_proposed",
                   "occurred_at": T, "payload": {"title": "probe",
                                                 "format": "equity_investment",
                                                 "sector": "electric_vehicles",
                                                 "parties": ["probe-jp"]}})["aggregate_id"]
             for d in range(DEALS_PER_WRITER)]
    for n in range(pairs):
        deal = deals[n % DEALS_PER_WRITER]
        receipt = post({"event_id": f"probe-{writer}-{n}", "type": "pledge_made",
                        "occurred_at": T, "payload": {
                            "deal_id": deal, "pledge_id": f"p-{writer}-{n}", "firm": "probe-jp",
                            "amount": {"low": "1000000", "high": "2000000", "currency": "USD"}}})
        urls = cluster.read_urls()
        url = urls[next(turn) % len(urls)]
        read = reads.get(url)
        if read is None:
            read = reads[url] = httpx.Client(base_url=url, headers=cluster.reader, timeout=60)
        started = time.perf_counter()
        try:
            answer = read.get(f"/v1/deals/{deal}", params={"min_position": receipt["position"]})
        except httpx.TransportError:  # the instance was just stopped: not an answer
            continue
        fresh = time.perf_counter() - started
        started = time.perf_counter()
        try:
            read.get(f"/v1/deals/{deal}")
        except httpx.TransportError:
            continue
        plain = time.perf_counter() - started
        with results.lock:
            results.pairs += 1
            if answer.status_code != 200:
                results.not_visible += 1
                continue
            results.fresh_read.append(fresh)
            results.plain_read.append(plain)
            body = answer.json()
            if body["version"] < receipt["aggregate_version"]:
                results.stale += 1
                if len(results.examples) < 5:
                    results.examples.append(
                        f"receipt position {receipt['position']} version "
                        f"{receipt['aggregate_version']}; answer position {body['position']} "
                        f"version {body['version']}")


def phase(cluster: Cluster, results: Results, name: int, pairs: int, writers: int,
          midway: Any = None) -> None:
    turn = itertools.count()
    threads = [threading.Thread(target=run_writer,
                                args=(cluster, results, name * 100 + w, pairs // writers, turn))
               for w in range(writers)]
    for thread in threads:
        thread.start()
    if midway is not None:
        target = results.pairs + pairs // 2
        while results.pairs < target and any(t.is_alive() for t in threads):
            time.sleep(0.01)
        midway()
    for thread in threads:
        thread.join()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * q) - 1)] * 1e3 if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,200 pairs instead of 10,000")
    parser.add_argument("--pairs", type=int, default=None)
    parser.add_argument("--writers", type=int, default=4)
    args = parser.parse_args()
    total = args.pairs or (1200 if args.quick else 10_000)
    per_phase = total // 4
    results = Results()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as name, ExitStack() as stack:
        cluster = Cluster(stack, Path(name))
        httpx.post(f"{cluster.write_url}/v1/events", headers=cluster.writer, timeout=60, json={
            "event_id": "probe-firm", "type": "firm_registered", "occurred_at": T,
            "payload": {"code": "probe-jp", "name": "Probe", "country": "JP",
                        "kind": "manufacturer"}}).raise_for_status()
        phase(cluster, results, 1, per_phase, args.writers)  # one instance
        phase(cluster, results, 2, per_phase, args.writers, cluster.add_projections)
        phase(cluster, results, 3, per_phase, args.writers, cluster.add_projections)
        phase(cluster, results, 4, per_phase, args.writers, cluster.remove_projections)
    elapsed = time.perf_counter() - started
    fresh_p50 = statistics.median(results.fresh_read) * 1e3 if results.fresh_read else 0.0
    plain_p50 = statistics.median(results.plain_read) * 1e3 if results.plain_read else 0.0
    fresh_p99, plain_p99 = percentile(results.fresh_read, 0.99), percentile(results.plain_read,
                                                                          0.99)
    print(json.dumps({
        "benchmark": "freshness_probe",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"pairs_offered": total, "writers": args.writers,
                     "partitions": PARTITIONS, "instances": "1 → 2 → 3 → 2 (joins, leave)",
                     "seconds": round(elapsed, 1)},
        "stale_examples": results.examples,
        "results": [
            {"metric": "pairs", "ours": results.pairs, "baseline": total, "ratio":
             round(results.pairs / total, 3), "unit": "write→read pairs answered"},
            {"metric": "stale_answers", "ours": results.stale, "baseline": 0, "ratio": None,
             "unit": "answers without the write"},
            {"metric": "not_visible", "ours": results.not_visible, "baseline": 0,
             "ratio": None, "unit": "409 answers"},
            {"metric": "read_with_min_position_p50", "ours": round(fresh_p50, 2),
             "baseline": round(plain_p50, 2),
             "ratio": round(fresh_p50 / plain_p50, 2) if plain_p50 else None,
             "unit": "ms (baseline: plain read)"},
            {"metric": "read_with_min_position_p99", "ours": round(fresh_p99, 2),
             "baseline": round(plain_p99, 2),
             "ratio": round(fresh_p99 / plain_p99, 2) if plain_p99 else None,
             "unit": "ms (baseline: plain read)"},
        ],
    }))


if __name__ == "__main__":
    main()
