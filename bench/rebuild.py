"""Full rebuild of the read model from the log, beside the raw rate of reading that log.

Both run in the same process on the same store (a fresh SQLite file), so the ratio holds on
a noisy machine. The rebuild is the one `dealreg projections rebuild` runs (its log feed,
pages, batches and projector) into empty tables; its time is split into reading and
translating stored events to contract envelopes and applying them, so a regression points
at its half. Prints one JSON object on
its last line.

    python bench/rebuild.py [--quick] [--events N] [--read-model URL]

--read-model names an empty database for the read model (e.g. a PostgreSQL one); by
default it is a SQLite file beside the store.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from workload import fill

from services.embedded.projection_feed import log_rebuild_feed
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.tables import create_read_schema
from services.projections.rebuild.progress_bar import RebuildProgress
from services.registry.adapters.event_store import open_event_store
from services.shared.database import create_sql_engine
from services.shared.settings import Settings, sqlalchemy_url

PAGE = 2000  # the rebuild command's default page


def raw_read(store, head: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Entries read per second, and CPU microseconds per entry."""
    started, cpu, after, read = time.perf_counter(), time.process_time(), 0, 0
    while after < head:
        page = store.read_log(after, PAGE)
        read += len(page)
        after = page[-1].id
    return (read / (time.perf_counter() - started),
            (time.process_time() - cpu) * 1e6 / read)


@dataclass
class Rebuild:
    events: int = 0
    seconds: float = 0.0
    translating: float = 0.0  # reading the log and building envelopes
    applying: float = 0.0  # ReadModelProjector.project
    cpu_translating: float = 0.0
    cpu_applying: float = 0.0


def rebuild(store, read_model_url: str, head: int) -> Rebuild:  # type: ignore[no-untyped-def]
    """The rebuild's own feed (`log_rebuild_feed`: its pages, its batches, its translation)
    into empty tables, with the time spent reading and translating pages told apart."""
    engine = create_sql_engine(read_model_url)
    create_read_schema(engine)
    projector = ReadModelProjector(engine)
    done = Rebuild()
    feed = log_rebuild_feed(store, page_size=PAGE)
    read_page = feed.read_page

    def timed_read_page(after: int, until: int, limit: int) -> Any:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return read_page(after, until, limit)
        finally:
            done.translating += time.perf_counter() - started
            done.cpu_translating += time.process_time() - cpu

    feed.read_page = timed_read_page
    started, cpu = time.perf_counter(), time.process_time()
    feed.apply_until(projector, {0: head}, RebuildProgress(io.StringIO()))
    done.seconds = time.perf_counter() - started
    done.applying = done.seconds - done.translating
    done.cpu_applying = time.process_time() - cpu - done.cpu_translating
    done.events = feed.applied
    engine.dispose()
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run under 60 seconds")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--read-model", default=None, help="URL of an empty database")
    args = parser.parse_args()
    events = args.events or (10_000 if args.quick else 100_000)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        store = open_event_store(Settings(data_dir=folder))
        fill(store, events)
        head = store.head_position()
        raw, raw_cpu_us = raw_read(store, head)
        read_model_url = sqlalchemy_url(args.read_model) if args.read_model \
            else f"sqlite:///{folder / 'rebuilt.db'}"
        rebuilt = rebuild(store, read_model_url, head)
        store.close()
    ours = rebuilt.events / rebuilt.seconds
    print(json.dumps({
        "benchmark": "rebuild",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"events": rebuilt.events, "page": PAGE, "store": "sqlite",
                     "read_model": make_url(read_model_url).get_backend_name()},
        "results": [
            {"metric": "rebuild", "ours": round(ours, 1), "baseline": round(raw, 1),
             "ratio": round(ours / raw, 4), "unit": "events/s (baseline: raw log read)"},
            {"metric": "rebuild_cpu_per_event", "ours": round(
                (rebuilt.cpu_translating + rebuilt.cpu_applying) * 1e6 / rebuilt.events, 1),
             "baseline": round(raw_cpu_us, 1), "ratio": round(
                 (rebuilt.cpu_translating + rebuilt.cpu_applying) * 1e6 / rebuilt.events
                 / raw_cpu_us, 2), "unit": "us CPU (baseline: raw log read)"},
        ],
        "cpu_per_event_us": {
            "translate": round(rebuilt.cpu_translating * 1e6 / rebuilt.events, 1),
            "apply": round(rebuilt.cpu_applying * 1e6 / rebuilt.events, 1)},
        "time_share": {"translate": round(rebuilt.translating / rebuilt.seconds, 3),
                       "apply": round(rebuilt.applying / rebuilt.seconds, 3)},
    }))


if __name__ == "__main__":
    main()
