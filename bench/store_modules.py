"""Which event-store module: the library's native SQLite and PostgreSQL recorders beside
eventsourcing-sqlalchemy's, saving single-event and 100-event transactions in the same run.

Deal Registry uses the native modules; this is the measurement behind that choice. Needs the
optional `bench` extra (`pip install -e '.[bench]'`). Prints one JSON object on its last
line: `ours` is the native module, `baseline` eventsourcing-sqlalchemy on the same server.

    python bench/store_modules.py [--quick] [--events N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from service_process import fresh_postgres_database

from services.shared.settings import Settings

BATCH = 100


class Counter(Aggregate):
    """A bare aggregate with ~1 KB of state change."""

    def __init__(self, note: str) -> None:
        self.note = note


def saves_per_second(env: dict[str, str], events: int, per_save: int) -> float:
    app: Application[Any] = Application(env=env)
    try:
        started = time.perf_counter()
        for _ in range(events // per_save):
            app.save(*(Counter("x" * 1000) for _ in range(per_save)))
        return events / (time.perf_counter() - started)
    finally:
        app.close()


def sqlalchemy_env(url: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "eventsourcing_sqlalchemy", "SQLALCHEMY_URL": url}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run under 60 seconds")
    parser.add_argument("--events", type=int, default=None)
    args = parser.parse_args()
    try:
        import eventsourcing_sqlalchemy  # noqa: F401
    except ImportError:
        raise SystemExit("needs eventsourcing-sqlalchemy: pip install -e '.[bench]'") from None
    events = args.events or (1000 if args.quick else 5000)
    results = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        stores = {
            "sqlite": (
                {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                 "SQLITE_DBNAME": str(folder / "native.db")},
                sqlalchemy_env(f"sqlite:///{folder / 'sqlalchemy.db'}"),
            ),
        }
        # Two databases on the same server: the modules' tables share a name, not a shape.
        with fresh_postgres_database() as url, fresh_postgres_database() as other_url:
            native_pg = Settings(database_url=url).event_store_env()
            native_pg.pop("SNAPSHOT_INTERVAL", None)
            native_pg.pop("AGGREGATE_CACHE_MAXSIZE", None)
            stores["postgres"] = (
                native_pg,
                sqlalchemy_env(other_url.replace("postgresql://", "postgresql+psycopg://", 1)),
            )
            for store, (native, alchemy) in stores.items():
                for per_save in (1, BATCH):
                    ours = saves_per_second(native, events, per_save)
                    baseline = saves_per_second(alchemy, events, per_save)
                    results.append({
                        "metric": f"{store}_saves_{per_save}_per_transaction",
                        "ours": round(ours, 1), "baseline": round(baseline, 1),
                        "ratio": round(ours / baseline, 3), "unit": "events/s",
                    })
    print(json.dumps({
        "benchmark": "store_modules",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"events": events, "ours": "eventsourcing native module",
                     "baseline": "eventsourcing-sqlalchemy"},
        "results": results,
    }))


if __name__ == "__main__":
    main()
