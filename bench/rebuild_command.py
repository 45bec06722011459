"""`dealreg projections rebuild` on a store of 100,000 events: its rate beside the live
embedded feed's rate on the same log, and whether every table's checksum matched.

The live read model is built first by the embedded projection feed (the baseline: the same
log, the same projector, into live tables); then the command rebuilds it into fresh tables,
compares and switches. Prints one JSON object on its last line.

    python bench/rebuild_command.py [--quick] [--events N] [--database-url URL]

--database-url puts the event store and the read model in an empty PostgreSQL database;
by default both are SQLite files in a temporary folder.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from workload import fill

from services.cli import main as dealreg
from services.embedded.projection_feed import EmbeddedProjectionFeed
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.tables import create_read_schema
from services.registry.adapters.event_store import open_event_store
from services.shared.database import create_sql_engine
from services.shared.settings import Settings

REPORT = re.compile(r"rebuilt from \S+: ([\d,]+) events \(([\d,]+) entries read\) to position "
                    r"(\d+) in ([\d.]+) s, [\d,]+ events/s; ([\d.]+) s in all")
HELD = re.compile(r"the live projector waited ([\d.]+) s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run under 60 seconds")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--database-url", default=None, help="an empty PostgreSQL database")
    args = parser.parse_args()
    events = args.events or (10_000 if args.quick else 100_000)
    with tempfile.TemporaryDirectory() as name:
        settings = Settings(data_dir=Path(name), database_url=args.database_url)
        os.environ["DEALREG_DATA_DIR"] = name
        if args.database_url:
            os.environ["DEALREG_DATABASE_URL"] = args.database_url
        store = open_event_store(settings)
        fill(store, events)
        live = create_sql_engine(settings.read_model_url())
        create_read_schema(live)
        started = time.perf_counter()
        feed = EmbeddedProjectionFeed(store, ReadModelProjector(live), page_size=2000)
        head = feed.catch_up()
        live_seconds = time.perf_counter() - started
        live.dispose()
        store.close()

        out = io.StringIO()
        stdout, sys.stdout = sys.stdout, out
        try:
            code = dealreg(["projections", "rebuild"])
        finally:
            sys.stdout = stdout
    printed = out.getvalue()
    found = REPORT.search(printed)
    if found is None:
        raise SystemExit(f"unexpected output (exit {code}):\n{printed}")
    held = HELD.search(printed)
    applied = int(found[1].replace(",", ""))
    ours = applied / float(found[4])
    baseline = applied / live_seconds
    print(printed, file=sys.stderr)
    print(json.dumps({
        "benchmark": "rebuild_command",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"events": applied, "log_entries": head, "page": 2000,
                     "backend": "postgresql" if args.database_url else "sqlite"},
        "results": [{"metric": "rebuild", "ours": round(ours, 1),
                     "baseline": round(baseline, 1), "ratio": round(ours / baseline, 4),
                     "unit": "events/s"}],
        "checksums_equal": code == 0 and "all " in printed and "tables equal" in printed,
        "exit_code": code,
        "seconds_in_all": float(found[5]),
        "live_projector_waited_seconds": float(held[1]) if held else None,
    }))


if __name__ == "__main__":
    main()
