"""Full rebuild of the read model from the log, beside the raw rate of reading that log.

Both run in the same process on the same store (a fresh SQLite file), so the ratio holds on
a noisy machine. The rebuild's time is split into translating stored events to contract
envelopes and applying them, so a regression points at its half. Prints one JSON object on
its last line.

    python bench/rebuild.py [--quick] [--events N] [--read-model URL]

--read-model names an empty database for the read model (e.g. a PostgreSQL one); by
default it is a SQLite file beside the store.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from workload import fill

from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.progress import SourceProgress
from services.projections.read_model.tables import create_read_schema
from services.registry.adapters.event_store import open_event_store
from services.registry.relay.contract_events import envelopes_from
from services.shared.database import create_sql_engine
from services.shared.settings import Settings, sqlalchemy_url

PAGE = 1000


def raw_read_rate(store, head: int) -> float:  # type: ignore[no-untyped-def]
    started, after, read = time.perf_counter(), 0, 0
    while after < head:
        page = store.read_log(after, PAGE)
        read += len(page)
        after = page[-1].id
    return read / (time.perf_counter() - started)


@dataclass
class Rebuild:
    events: int = 0
    seconds: float = 0.0
    translating: float = 0.0  # reading the log and building envelopes
    applying: float = 0.0  # ReadModelProjector.apply


def rebuild(store, read_model_url: str, head: int) -> Rebuild:  # type: ignore[no-untyped-def]
    engine = create_sql_engine(read_model_url)
    create_read_schema(engine)
    projector = ReadModelProjector(engine)
    done, after = Rebuild(), 0
    started = time.perf_counter()
    while after < head:
        page = store.read_log(after, PAGE)
        envelopes = envelopes_from(list(page), store.mapper)
        translated = time.perf_counter()
        projector.apply(envelopes, [SourceProgress.of_log(page[-1].id)])
        done.applying += time.perf_counter() - translated
        done.events += len(envelopes)
        after = page[-1].id
    done.seconds = time.perf_counter() - started
    done.translating = done.seconds - done.applying
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
        raw = raw_read_rate(store, head)
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
        "results": [{"metric": "rebuild", "ours": round(ours, 1), "baseline": round(raw, 1),
                     "ratio": round(ours / raw, 4), "unit": "events/s"}],
        "time_share": {"translate": round(rebuilt.translating / rebuilt.seconds, 3),
                       "apply": round(rebuilt.applying / rebuilt.seconds, 3)},
    }))


if __name__ == "__main__":
    main()
