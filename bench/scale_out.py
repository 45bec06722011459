"""Scale-out of the read side: the apply rate of 1 and of 2 projection instances on one
4-partition topic.

A SQLite event store is filled with N events (bench/workload.py: firms, deals, pledges,
revisions, withdrawals) and the relay publishes that log once to a fresh 4-partition topic
on a tansu broker. Then, for 1 and for 2 instances (processes, each running the
`ProjectionConsumer` the projections service runs, all in one consumer group), a fresh
PostgreSQL read model is fed the whole topic from its start. Measured per run:

- apply rate: events applied / seconds from the start of the first batch that applied an
  event to the commit of the last one, over all instances;
- time to head: seconds from the instances' start (all at once) until the read model's
  position reaches the log's head, including the consumer group's join.

The 1-instance run is the baseline. Prints a table, then one JSON object on its last line.
`--one-lock` runs the same with every batch serialised on one lock, as before batches took
per-partition locks, for comparison.

    python bench/scale_out.py [--quick] [--events N] [--runs R] [--one-lock]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service_process import TANSU_CONSUMER_ENV, TansuBroker, fresh_postgres_database
from workload import fill

from services.projections.consumer.kafka_consumer import ConsumerConfig, ProjectionConsumer
from services.projections.projectors.parking import SourceEntry
from services.projections.projectors.read_model_projector import Projected, ReadModelProjector
from services.projections.read_model.progress import SourceProgress
from services.projections.read_model.tables import create_read_schema
from services.registry.adapters.event_store import open_event_store
from services.registry.relay.service import build_relay
from services.shared.database import create_sql_engine
from services.shared.kafka_topics import create_topics
from services.shared.settings import Settings, sqlalchemy_url

PARTITIONS = 4
INSTANCES = (1, 2)
POLL_SECONDS = 0.02
HANG_GUARD_SECONDS = 600.0  # a run that has not reached the head by then is broken
SESSION_TIMEOUT_MS = int(TANSU_CONSUMER_ENV["DEALREG_KAFKA_SESSION_TIMEOUT_MS"])
HEARTBEAT_INTERVAL_MS = int(TANSU_CONSUMER_ENV["DEALREG_KAFKA_HEARTBEAT_INTERVAL_MS"])


class TimedProjector(ReadModelProjector):
    """The projector, noting when its first applying batch began and its last one ended
    (time.monotonic: one clock for every process of the machine)."""

    first_start: float | None = None
    last_commit: float | None = None
    batches = 0

    def project(self, entries: Sequence[SourceEntry], progress: Sequence[SourceProgress]
                ) -> Projected:
        started = time.monotonic()
        projected = super().project(entries, progress)
        if projected.applied:
            if self.first_start is None:
                self.first_start = started
            self.last_commit = time.monotonic()
            self.batches += 1
        return projected


class OneLockProjector(TimedProjector):
    """For comparison: every batch of every partition takes the same lock."""

    def _lock(self, conn: Any, partitions: Any) -> None:
        super()._lock(conn, [("one-lock", 0)])


@dataclass
class InstanceResult:
    applied: int
    batches: int
    partitions: list[int]
    first_start: float | None
    last_commit: float | None


def run_instance(read_model_url: str, config: ConsumerConfig, one_lock: bool, ready: Any,
                 start: Any, stop: Any, results: Any) -> None:
    """One projection instance (a process of its own): says it is `ready`, then consumes
    from `start` until `stop`."""
    engine = create_sql_engine(read_model_url)
    projector = (OneLockProjector if one_lock else TimedProjector)(engine)
    consumer = ProjectionConsumer(projector, config)
    stopping = threading.Event()

    def watch() -> None:
        stop.wait()
        stopping.set()

    threading.Thread(target=watch, daemon=True).start()
    ready.put(True)
    start.wait()
    consumer.run(stopping)
    results.put(asdict(InstanceResult(
        consumer.stats.applied, projector.batches, sorted(consumer.stats.lag),
        projector.first_start, projector.last_commit)))
    engine.dispose()


@dataclass
class Run:
    instances: int
    applied: int
    apply_seconds: float
    to_head_seconds: float
    per_instance: list[InstanceResult]

    @property
    def rate(self) -> float:
        return self.applied / self.apply_seconds


def publish_log(folder: Path, bootstrap: str, topic: str, events: int) -> tuple[int, int]:
    """Fill a store under `folder` and publish it with the relay; returns (head, events)."""
    settings = Settings(data_dir=folder, kafka_bootstrap=bootstrap, kafka_topic=topic)
    store = open_event_store(settings)
    appended = fill(store, events)
    head = store.head_position()
    store.close()
    relay = build_relay(settings)
    stop = threading.Event()
    publishing = threading.Thread(target=relay.run, args=(stop,))
    publishing.start()
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while relay.status.watermark_position < head:
        if time.monotonic() > deadline or not publishing.is_alive():
            stop.set()
            raise SystemExit(f"the relay did not publish the log: {relay.status.last_error}")
        time.sleep(POLL_SECONDS)
    stop.set()
    publishing.join()
    return head, appended


def consume(instances: int, bootstrap: str, topic: str, head: int, one_lock: bool) -> Run:
    """A fresh read model fed the whole topic by `instances` processes in one group."""
    spawn = multiprocessing.get_context("spawn")
    with fresh_postgres_database() as database_url:
        url = sqlalchemy_url(database_url)
        engine = create_sql_engine(url)
        create_read_schema(engine)  # once, before the workers start
        watcher = ReadModelProjector(engine)
        config = ConsumerConfig(bootstrap, topic, f"{topic}.dlq",
                                group_id=f"scale-out-{uuid.uuid4().hex[:8]}",
                                session_timeout_ms=SESSION_TIMEOUT_MS,
                                heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS)
        ready, results = spawn.Queue(), spawn.Queue()
        start, stop = spawn.Event(), spawn.Event()
        processes = [spawn.Process(target=run_instance,
                                   args=(url, config, one_lock, ready, start, stop,
                                         results))
                     for _ in range(instances)]
        for process in processes:
            process.start()
        try:
            for _ in processes:  # imported and connected: the clock starts for all at once
                ready.get(timeout=HANG_GUARD_SECONDS)
            started = time.monotonic()
            start.set()
            while watcher.position() < head:
                if time.monotonic() - started > HANG_GUARD_SECONDS:
                    raise SystemExit(f"{instances} instance(s) did not reach position {head}")
                if not all(process.is_alive() for process in processes):
                    raise SystemExit("a projection instance died")
                time.sleep(POLL_SECONDS)
            to_head = time.monotonic() - started
            stop.set()
            done = [InstanceResult(**results.get(timeout=60)) for _ in processes]
        finally:
            stop.set()
            start.set()
            for process in processes:
                process.join(timeout=30)
                if process.is_alive():
                    process.kill()
            engine.dispose()
    firsts = [r.first_start for r in done if r.first_start is not None]
    lasts = [r.last_commit for r in done if r.last_commit is not None]
    return Run(instances, sum(r.applied for r in done), max(lasts) - min(firsts), to_head,
               done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 events, one run each")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None, help="runs per instance count")
    parser.add_argument("--one-lock", action="store_true",
                        help="serialise every batch on one lock (the former behaviour)")
    args = parser.parse_args()
    events = args.events or (5_000 if args.quick else 20_000)
    runs = args.runs or (1 if args.quick else 2)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as name, \
            TansuBroker(tempfile.mkdtemp(prefix="scale-out-tansu-")) as broker:
        topic = f"scale.events.{uuid.uuid4().hex[:8]}"
        create_topics(broker.bootstrap, topic, f"{topic}.dlq", PARTITIONS)
        head, appended = publish_log(Path(name), broker.bootstrap, topic, events)
        measured: dict[int, list[Run]] = {n: [] for n in INSTANCES}
        for _ in range(runs):
            for instances in INSTANCES:  # interleaved, so drift affects both alike
                run = consume(instances, broker.bootstrap, topic, head, args.one_lock)
                if run.applied != appended:
                    raise SystemExit(f"{instances} instance(s) applied {run.applied} events "
                                     f"of {appended}")
                measured[instances].append(run)

    print(f"{'instances':>9} {'run':>3} {'applied':>8} {'apply s':>8} {'events/s':>9} "
          f"{'to head s':>9}  per instance: applied (partitions)")
    for instances in INSTANCES:
        for n, run in enumerate(measured[instances], 1):
            shares = ", ".join(f"{r.applied} ({','.join(map(str, r.partitions))})"
                               for r in run.per_instance)
            print(f"{instances:>9} {n:>3} {run.applied:>8} {run.apply_seconds:>8.2f} "
                  f"{run.rate:>9.0f} {run.to_head_seconds:>9.2f}  {shares}")
    rate = {n: statistics.median(r.rate for r in measured[n]) for n in INSTANCES}
    to_head = {n: statistics.median(r.to_head_seconds for r in measured[n]) for n in INSTANCES}
    print(json.dumps({
        "benchmark": "scale_out",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"events": appended, "partitions": PARTITIONS, "runs": runs,
                     "instances": list(INSTANCES), "read_model": "postgresql",
                     "broker": "tansu", "cpus": multiprocessing.cpu_count(),
                     "locking": "one lock" if args.one_lock else "per partition",
                     "seconds": round(time.perf_counter() - began, 1)},
        "results": [
            {"metric": "apply_rate", "ours": round(rate[2], 1), "baseline": round(rate[1], 1),
             "ratio": round(rate[2] / rate[1], 3), "unit": "events/s (2 instances vs 1)"},
            {"metric": "time_to_head", "ours": round(to_head[2], 2),
             "baseline": round(to_head[1], 2), "ratio": round(to_head[2] / to_head[1], 3),
             "unit": "s (2 instances vs 1)"},
        ],
    }))


if __name__ == "__main__":
    main()
