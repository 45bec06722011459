"""The embedded projection feed's CPU per event, with few large deals and many small ones.

Pledges are recorded with the library straight into a fresh SQLite store, spread round-robin
over `--small` deals (many pledges each) or `--large` deals (few each), then read from the
log, translated and projected by the embedded feed in batches of `--batch` (the feed's own
code, with a page per batch: under load a batch is what arrived while the last one was
applied). The cost per event
must not grow with the pledges a deal holds (issue 14): the baseline is the many-deals run,
in the same process. Prints one JSON object on its last line.

    python bench/feed_cost.py [--quick] [--events N] [--batch B]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

from services.embedded.projection_feed import EmbeddedProjectionFeed
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.tables import create_read_schema
from services.registry.adapters.event_store import open_event_store
from services.registry.domain.deal import Deal
from services.registry.domain.firm import Firm
from services.registry.domain.recorded import Provenance
from services.registry.domain.values import AmountRange, UsdConversion
from services.shared.database import create_sql_engine
from services.shared.settings import Settings

START = datetime(2025, 1, 1, tzinfo=UTC)


def cpu_ms_per_event(deal_count: int, events: int, batch: int) -> float:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        store = open_event_store(Settings(data_dir=folder))

        def provenance(n: int) -> Provenance:
            return Provenance(START + timedelta(minutes=n), "bench", f"bench-{n}")

        store.save(Firm.register("bench-jp", "JP firm", "JP", "manufacturer", provenance(0)),
                   Firm.register("bench-in", "IN firm", "IN", "manufacturer", provenance(1)))
        deals = [Deal.propose(uuid4(), "Bench deal", "equity_investment", "electric_vehicles",
                              ["bench-jp", "bench-in"], "", provenance(2))
                 for _ in range(deal_count)]
        store.save(*deals)
        amount = AmountRange.of(Decimal(1_000_000), Decimal(2_000_000), "USD")
        usd = UsdConversion.of(amount, Decimal(1), "bench")
        engine = create_sql_engine(f"sqlite:///{folder / 'read.db'}")
        create_read_schema(engine)
        projector = ReadModelProjector(engine)
        # The embedded feed itself (read the log, translate, project), a page per batch.
        feed = EmbeddedProjectionFeed(store, projector, page_size=2 + deal_count)
        feed.catch_up()  # the firms and deals, not measured
        feed.page_size = batch
        for n in range(events):
            deal = deals[n % deal_count]
            deal.make_pledge(f"p{n}", "bench-jp", "JP", amount, usd, provenance(10 + n))
            store.save(deal)
        started = time.process_time()
        feed.catch_up()
        cpu = time.process_time() - started
        store.close()
        engine.dispose()
        return cpu * 1000 / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 pledges")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--small", type=int, default=20, help="deals in the large-deals run")
    parser.add_argument("--large", type=int, default=1000, help="deals in the baseline run")
    args = parser.parse_args()
    events = args.events or (1000 if args.quick else 5000)
    baseline = cpu_ms_per_event(args.large, events, args.batch)
    ours = cpu_ms_per_event(args.small, events, args.batch)
    print(json.dumps({
        "benchmark": "feed_cost", "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"events": events, "batch": args.batch, "store": "sqlite"},
        "results": [{"metric": f"feed_cpu_per_event_{args.small}_deals",
                     "ours": round(ours, 3),
                     "baseline": round(baseline, 3), "ratio": round(ours / baseline, 2),
                     "unit": f"ms CPU (baseline: {args.large} deals)"}],
    }))


if __name__ == "__main__":
    main()
