"""Scale-out on one machine: `dealreg registry --workers 2` against `--workers 1`, and
`dealreg projections --workers 2` against `--workers 1`, in the same run.

Write side: HTTP single-event appends (pledges spread round-robin over 100 deals, as
bench/append.py posts them) at concurrency 32 through keep-alive connections, each count of
workers on a fresh PostgreSQL database. The clock starts once every worker accepts on the
port (its epoll set holds the listening socket, from /proc) and the clients' connections are
open (a warm-up burst opens them all at once, so the kernel spreads them over the workers).
Besides the rate: the CPU per event of every service process (supervisor and workers) and of
the PostgreSQL backends serving that database, from /proc: far steadier than a rate on a
machine that other work shares; and the transactions PostgreSQL committed and rolled back
per event (pg_stat_database), which show how well group commit batches requests.

Read side: a log of N events (bench/workload.py) is published once to a 4-partition topic
on a tansu broker (bench/scale_out.py's publish_log); then `dealreg projections --workers
1` and `--workers 2` each feed a fresh PostgreSQL read model the whole topic, in a consumer
group of their own. Measured: the apply rate from the first applied event to the log's head
(the second worker's join, a rebalance, falls inside it), the time from the command's start
to the head, and the service's CPU per event.

Prints a table per side, then one JSON object on its last line: ours = 2 workers, baseline =
1 worker.

    python bench/workers.py [--quick] [--events N] [--log-events N] [--concurrency C]
                            [--skip-projections]
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import queue
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import psycopg
from append import tree_cpu_seconds
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scale_out import PARTITIONS, publish_log
from service_process import (
    ADMIN_URL,
    TANSU_CONSUMER_ENV,
    TansuBroker,
    free_port,
    fresh_postgres_database,
    partner_headers,
    stop_service,
)

from services.projections.read_model.queries import ReadModelQueries
from services.shared.database import create_sql_engine
from services.shared.kafka_topics import create_topics
from services.shared.settings import sqlalchemy_url

T = "2025-06-01T10:00:00+05:30"
DEALS = 100
WORKER_COUNTS = (1, 2)
HANG_GUARD_SECONDS = 600.0
POLL_SECONDS = 0.02


def start_workers(command: str, workers: int, env: dict[str, str], log: Path
                  ) -> tuple[subprocess.Popen[bytes], str]:
    """`dealreg <command> --workers N` on its own port, its warnings and errors in `log`;
    returns once every worker accepts."""
    port = free_port()
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", command, "--workers", str(workers),
             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=stderr,
            env={**os.environ, "DEALREG_LOG_LEVEL": "WARNING", **env})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if len(accepting_processes(process.pid, port)) == workers:
            return process, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"dealreg {command} --workers {workers} did not start: "
                     f"{log.read_text(errors='replace')[-2000:]}")


def accepting_processes(pid: int, port: int) -> set[int]:
    """The processes under `pid` whose event loop waits on the socket listening on `port`
    (uvicorn's supervisor holds that socket too, but never polls it)."""
    inode = listening_inode(port)
    if inode is None:
        return set()
    found = set()
    for process in descendants(pid):
        try:
            for fd in os.listdir(f"/proc/{process}/fd"):
                if os.readlink(f"/proc/{process}/fd/{fd}") != "anon_inode:[eventpoll]":
                    continue
                with open(f"/proc/{process}/fdinfo/{fd}") as info:
                    if f"ino:{inode:x} " in info.read():
                        found.add(process)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def listening_inode(port: int) -> int | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as sockets:
            for line in sockets.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return int(fields[9])
    return None


def descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    stack.extend(int(child) for child in children.read().split())
        except FileNotFoundError:
            continue
        found.append(current)
    return found


def cpu_seconds(pid: int) -> float:
    """User and system CPU of one process (its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_cpu_seconds(database: str) -> float:
    """CPU of the PostgreSQL backends connected to `database` (their titles name it)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                title = cmdline.read()
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        if title.startswith(b"postgres: ") and f" {database} ".encode() in title:
            total += cpu_seconds(int(entry))
    return total


def transactions(database: str) -> tuple[int, int]:
    """Commits and rollbacks PostgreSQL counted for `database`, once every backend has
    reported: a backend sends its counts at most once a second."""
    time.sleep(1.5)
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT xact_commit, xact_rollback FROM pg_stat_database "
                           "WHERE datname = %s", (database,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@dataclass
class WriteRun:
    workers: int
    rate: float
    service_cpu_ms: float
    database_cpu_ms: float
    worker_cpu_shares: list[float]
    commits_per_event: float
    rollbacks_per_event: float


def signing_env() -> dict[str, str]:
    # On PostgreSQL the tree-head signing key is configured, never made up.
    return {"DEALREG_SIGNING_KEY": base64.b64encode(
        Ed25519PrivateKey.generate().private_bytes_raw()).decode()}


def http_appends(workers: int, events: int, concurrency: int) -> WriteRun:
    with tempfile.TemporaryDirectory() as folder, fresh_postgres_database() as database_url:
        headers = partner_headers(Path(folder), database_url)
        log = Path(folder) / "registry.log"
        process, url = start_workers("registry", workers, {
            "DEALREG_DATABASE_URL": database_url, "DEALREG_DATA_DIR": folder, **signing_env()},
            log)
        idle: queue.SimpleQueue[httpx.Client] = queue.SimpleQueue()
        for _ in range(concurrency):
            idle.put(httpx.Client(base_url=url, headers=headers, timeout=60))

        def post(body: dict[str, Any]) -> None:
            client = idle.get()
            try:
                response = client.post("/v1/events", json=body)
            finally:
                idle.put(client)
            if response.status_code != 201:
                raise SystemExit(f"{workers} workers answered {response.status_code}: "
                                 f"{response.text}; the service's log ends: "
                                 f"{log.read_text(errors='replace')[-3000:]}")

        try:
            for code in ("bench-jp", "bench-in"):
                post({"event_id": f"f-{code}", "type": "firm_registered", "occurred_at": T,
                      "payload": {"code": code, "name": code, "country": "JP",
                                  "kind": "manufacturer"}})
            deal_ids = [str(uuid4()) for _ in range(DEALS)]
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(post, [
                    {"event_id": f"d-{n}", "type": "deal_proposed", "occurred_at": T,
                     "payload": {"deal_id": deal_id, "title": "bench",
                                 "format": "equity_investment", "sector": "electric_vehicles",
                                 "parties": ["bench-jp", "bench-in"]}}
                    for n, deal_id in enumerate(deal_ids)]))

                def pledge(n: int) -> None:
                    post({"event_id": f"p-{n}", "type": "pledge_made", "occurred_at": T,
                          "payload": {"deal_id": deal_ids[n % DEALS], "pledge_id": f"p-{n}",
                                      "firm": "bench-jp",
                                      "amount": {"low": "1000000", "high": "2000000",
                                                 "currency": "USD"}}})

                warm_up = max(concurrency * 4, events // 10)
                list(pool.map(pledge, range(events, events + warm_up)))
                processes = descendants(process.pid)
                database = database_url.rpartition("/")[2]
                commits_before, rollbacks_before = transactions(database)
                cpu_before = tree_cpu_seconds(process.pid)
                per_process_before = {pid: cpu_seconds(pid) for pid in processes}
                database_before = backend_cpu_seconds(database)
                started = time.perf_counter()
                list(pool.map(pledge, range(events)))
                rate = events / (time.perf_counter() - started)
            service_cpu = tree_cpu_seconds(process.pid) - cpu_before
            database_cpu = backend_cpu_seconds(database) - database_before
            commits, rollbacks = transactions(database)
            worker_cpu = sorted((cpu_seconds(pid) - before
                                 for pid, before in per_process_before.items()
                                 if pid != process.pid and cpu_seconds(pid) - before > 0.05),
                                reverse=True)
        finally:
            while not idle.empty():
                idle.get().close()
            stop_service(process)
    return WriteRun(workers, rate, service_cpu * 1000 / events, database_cpu * 1000 / events,
                    [round(c / service_cpu, 3) for c in worker_cpu],
                    (commits - commits_before) / events, (rollbacks - rollbacks_before) / events)


@dataclass
class ReadRun:
    workers: int
    rate: float
    to_head_seconds: float
    service_cpu_ms: float


def projections_feed(workers: int, bootstrap: str, topic: str, head: int, events: int
                     ) -> ReadRun:
    with tempfile.TemporaryDirectory() as folder, fresh_postgres_database() as database_url:
        engine = create_sql_engine(sqlalchemy_url(database_url))
        queries = ReadModelQueries(engine)
        started = time.monotonic()
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "projections", "--workers", str(workers),
             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "DEALREG_LOG_LEVEL": "WARNING",
                 "DEALREG_DATABASE_URL": database_url, "DEALREG_DATA_DIR": folder,
                 "DEALREG_KAFKA_BOOTSTRAP": bootstrap, "DEALREG_KAFKA_TOPIC": topic,
                 "DEALREG_KAFKA_DLQ_TOPIC": f"{topic}.dlq",
                 "DEALREG_KAFKA_GROUP_ID": f"bench-workers-{uuid.uuid4().hex[:8]}",
                 **TANSU_CONSUMER_ENV})
        try:
            # Watched from the command's start: the first worker applies while the second
            # is still starting, whose start-up CPU then counts.
            first_applied: float | None = None
            cpu_at_first = 0.0
            while (position := read_position(queries)) < head:
                now = time.monotonic()
                if first_applied is None and position > 0:
                    first_applied, cpu_at_first = now, tree_cpu_seconds(process.pid)
                if now - started > HANG_GUARD_SECONDS or process.poll() is not None:
                    raise SystemExit(f"projections --workers {workers} did not reach {head}")
                time.sleep(POLL_SECONDS)
            reached = time.monotonic()
            service_cpu = tree_cpu_seconds(process.pid) - cpu_at_first
            if len(accepting_processes(process.pid, port)) != workers:
                raise SystemExit(f"projections --workers {workers}: not every worker serves")
        finally:
            stop_service(process)
            engine.dispose()
    return ReadRun(workers, events / (reached - (first_applied or started)),
                   reached - started, service_cpu * 1000 / events)


def read_position(queries: ReadModelQueries) -> int:
    """The read model's position; 0 until the first worker has made its tables."""
    try:
        return queries.position()
    except Exception:  # noqa: BLE001 - no tables yet
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a run of about two minutes")
    parser.add_argument("--events", type=int, default=None, help="appends per worker count")
    parser.add_argument("--log-events", type=int, default=None,
                        help="events the projections apply per worker count")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--skip-projections", action="store_true")
    args = parser.parse_args()
    events = args.events or (2_000 if args.quick else 10_000)
    log_events = args.log_events or (5_000 if args.quick else 20_000)
    began = time.perf_counter()

    writes = {n: http_appends(n, events, args.concurrency) for n in WORKER_COUNTS}
    print(f"{'workers':>7} {'events/s':>9} {'service ms/event':>16} {'database ms/event':>17}"
          f" {'commits/event':>13} {'rollbacks/event':>15}  CPU share per worker")
    for run in writes.values():
        print(f"{run.workers:>7} {run.rate:>9.0f} {run.service_cpu_ms:>16.3f} "
              f"{run.database_cpu_ms:>17.3f} {run.commits_per_event:>13.3f} "
              f"{run.rollbacks_per_event:>15.3f}  {run.worker_cpu_shares}")
    one, two = writes[1], writes[2]
    results: list[dict[str, Any]] = [
        {"metric": f"http_appends_c{args.concurrency}", "ours": round(two.rate, 1),
         "baseline": round(one.rate, 1), "ratio": round(two.rate / one.rate, 3),
         "unit": "events/s (2 registry workers vs 1)"},
        {"metric": "registry_cpu_per_event", "ours": round(two.service_cpu_ms, 3),
         "baseline": round(one.service_cpu_ms, 3),
         "ratio": round(two.service_cpu_ms / one.service_cpu_ms, 3),
         "unit": "ms (supervisor and workers)"},
        {"metric": "database_cpu_per_event", "ours": round(two.database_cpu_ms, 3),
         "baseline": round(one.database_cpu_ms, 3),
         "ratio": round(two.database_cpu_ms / one.database_cpu_ms, 3),
         "unit": "ms (PostgreSQL backends of the registry's database)"},
        {"metric": "database_commits_per_event", "ours": round(two.commits_per_event, 3),
         "baseline": round(one.commits_per_event, 3),
         "ratio": round(two.commits_per_event / one.commits_per_event, 3),
         "unit": "transactions committed (reads included) per appended event"},
        {"metric": "database_rollbacks_per_event", "ours": round(two.rollbacks_per_event, 3),
         "baseline": round(one.rollbacks_per_event, 3), "ratio": None,
         "unit": "transactions rolled back (refused saves, among others) per appended event"},
    ]
    settings: dict[str, Any] = {
        "events": events, "concurrency": args.concurrency, "deals": DEALS,
        "store": "postgres", "cpus": multiprocessing.cpu_count(),
        "transport": "HTTP/1.1 keep-alive to dealreg registry --workers N",
        "registry_worker_cpu_shares": {n: r.worker_cpu_shares for n, r in writes.items()}}

    if not args.skip_projections:
        with tempfile.TemporaryDirectory() as name, \
                TansuBroker(tempfile.mkdtemp(prefix="workers-tansu-")) as broker:
            topic = f"workers.events.{uuid.uuid4().hex[:8]}"
            create_topics(broker.bootstrap, topic, f"{topic}.dlq", PARTITIONS)
            head, appended = publish_log(Path(name), broker.bootstrap, topic, log_events)
            reads = {n: projections_feed(n, broker.bootstrap, topic, head, appended)
                     for n in WORKER_COUNTS}
        print(f"{'workers':>7} {'events/s':>9} {'to head s':>9} {'service ms/event':>16}")
        for read in reads.values():
            print(f"{read.workers:>7} {read.rate:>9.0f} {read.to_head_seconds:>9.2f} "
                  f"{read.service_cpu_ms:>16.3f}")
        results += [
            {"metric": "projection_apply_rate", "ours": round(reads[2].rate, 1),
             "baseline": round(reads[1].rate, 1),
             "ratio": round(reads[2].rate / reads[1].rate, 3),
             "unit": "events/s (2 projections workers vs 1)"},
            {"metric": "projection_time_to_head", "ours": round(reads[2].to_head_seconds, 2),
             "baseline": round(reads[1].to_head_seconds, 2),
             "ratio": round(reads[2].to_head_seconds / reads[1].to_head_seconds, 3),
             "unit": "s from the command's start"},
            {"metric": "projection_cpu_per_event", "ours": round(reads[2].service_cpu_ms, 3),
             "baseline": round(reads[1].service_cpu_ms, 3),
             "ratio": round(reads[2].service_cpu_ms / reads[1].service_cpu_ms, 3),
             "unit": "ms (supervisor and workers)"},
        ]
        settings.update({"log_events": appended, "partitions": PARTITIONS,
                         "broker": "tansu"})
    settings["seconds"] = round(time.perf_counter() - began, 1)
    print(json.dumps({"benchmark": "workers", "at": datetime.now(UTC).isoformat(
        timespec="seconds"), "settings": settings, "results": results}))


if __name__ == "__main__":
    main()
