"""Full rebuild of the read model from the log, beside the raw rate of reading that log.

Both run in the same process on the same store (a fresh SQLite file), so the ratio holds on
a noisy machine. Prints one JSON object on its last line.

    python bench/rebuild.py [--quick] [--events N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from workload import fill

from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.progress import SourceProgress
from services.projections.read_model.tables import create_read_schema
from services.registry.adapters.event_store import open_event_store
from services.registry.relay.contract_events import envelopes_from
from services.shared.database import create_sql_engine
from services.shared.settings import Settings

PAGE = 1000


def raw_read_rate(store, head: int) -> float:  # type: ignore[no-untyped-def]
    started, after, read = time.perf_counter(), 0, 0
    while after < head:
        page = store.read_log(after, PAGE)
        read += len(page)
        after = page[-1].id
    return read / (time.perf_counter() - started)


def rebuild_rate(store, folder: Path, head: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    engine = create_sql_engine(f"sqlite:///{folder / 'rebuilt.db'}")
    create_read_schema(engine)
    projector = ReadModelProjector(engine)
    started, after, applied = time.perf_counter(), 0, 0
    while after < head:
        page = store.read_log(after, PAGE)
        envelopes = envelopes_from(list(page), store.mapper)
        projector.apply(envelopes, [SourceProgress.of_log(page[-1].id)])
        applied += len(envelopes)
        after = page[-1].id
    return applied / (time.perf_counter() - started), applied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run under 60 seconds")
    parser.add_argument("--events", type=int, default=None)
    args = parser.parse_args()
    events = args.events or (10_000 if args.quick else 100_000)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        store = open_event_store(Settings(data_dir=folder))
        fill(store, events)
        head = store.head_position()
        raw = raw_read_rate(store, head)
        ours, applied = rebuild_rate(store, folder, head)
        store.close()
    print(json.dumps({
        "benchmark": "rebuild",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"events": applied, "page": PAGE, "store": "sqlite", "read_model": "sqlite"},
        "results": [{"metric": "rebuild", "ours": round(ours, 1), "baseline": round(raw, 1),
                     "ratio": round(ours / raw, 4), "unit": "events/s"}],
    }))


if __name__ == "__main__":
    main()
