"""The projection feed takes an event's hash from its successor's `previous_hash` where the
page holds that successor, instead of recomputing it; on an untouched log that is the same
hash, whatever the pages, and the relay's translation (which recomputes) agrees."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import pytest

from services.embedded.projection_feed import log_entries
from services.registry.adapters.event_store import DealRegistryStore, open_event_store
from services.registry.domain.deal import Deal
from services.registry.domain.firm import Firm
from services.registry.domain.recorded import Provenance
from services.registry.domain.values import AmountRange, UsdConversion
from services.registry.relay.contract_events import envelopes_from
from services.shared.settings import Settings

START = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DealRegistryStore]:
    opened = open_event_store(Settings(data_dir=tmp_path))
    yield opened
    opened.close()


def record_interleaved_deals(store: DealRegistryStore) -> None:
    """Two deals whose events alternate in the log, so pages cut their chains anywhere."""
    n = 0

    def provenance() -> Provenance:
        nonlocal n
        n += 1
        return Provenance(START + timedelta(minutes=n), "test", f"evt-{n}")

    store.save(Firm.register("jp-a", "JP A", "JP", "manufacturer", provenance()),
               Firm.register("in-b", "IN B", "IN", "manufacturer", provenance()))
    deals = [Deal.propose(uuid4(), f"Deal {d}", "equity_investment", "recycling",
                          ["jp-a", "in-b"], "", provenance()) for d in range(2)]
    store.save(*deals)
    amount = AmountRange.of(Decimal("1500000.50"), Decimal(6_000_000), "USD")
    for pledge in range(4):
        for deal in deals:
            deal.make_pledge(f"p{pledge}", "jp-a", "JP", amount,
                             UsdConversion.of(amount, Decimal(1), "test"), provenance())
            store.save(deal)
    revised = AmountRange.of(Decimal(2_000_000), Decimal(7_000_000), "USD")
    deals[0].revise_pledge("p0", revised, UsdConversion.of(revised, Decimal(1), "test"), "",
                           provenance())
    deals[1].withdraw_pledge("p1", "", provenance())
    store.save(*deals)


@pytest.mark.parametrize("page", [1, 3, 1000])
def test_chained_hashes_are_the_recomputed_ones(store: DealRegistryStore, page: int) -> None:
    record_interleaved_deals(store)
    notifications = list(store.read_log(0, 1000))
    recomputed = {e.position: e.hash for e in envelopes_from(notifications, store.mapper)}
    fed = {}
    for start in range(0, len(notifications), page):
        for entry in log_entries(notifications[start:start + page], store):
            assert entry.envelope is not None
            fed[entry.envelope.position] = entry.envelope.hash
    assert fed == recomputed
