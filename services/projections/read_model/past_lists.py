"""The deals as they were at a past bound (a business time, a recorded position, or both),
for the pages' time travel: folded from their history (rm_deal_events) by the projector's
own rules (`deal_history.fold_deals`), so a past list costs O(history) like every other past
deal view. Firms and meetings never change once recorded: their past is a filter
(`ReadModelQueries.firms` and `.meetings` with a bound).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from services.projections.read_model.deal_history import (
    DealState,
    HistoryEvent,
    PastBound,
    fold_deals,
)
from services.projections.read_model.queries import Page, registered_by
from services.projections.read_model.tables import deal_events
from services.projections.read_model.views import deal_summary, deal_view


class PastLists:
    """The deals the pages list when they show the past."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def deal_states(self, bound: PastBound) -> dict[Any, DealState]:
        query = select(deal_events).where(deal_events.c.position <= bound.position)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(deal_events.c.position))
            return fold_deals((HistoryEvent.of_row(row._mapping) for row in rows), bound)

    def deals(self, bound: PastBound, sector: str | None = None, format: str | None = None,
              status: str | None = None, party: str | None = None, limit: int = 50,
              offset: int = 0) -> Page:
        """Deals proposed by `bound`, newest first, as they stood then, filtered as
        `ReadModelQueries.deals` filters the present."""
        wanted = {"sector": sector, "format": format, "status": status}
        states = [s.deal for s in self.deal_states(bound).values()
                  if all(v is None or s.deal[k] == v for k, v in wanted.items())
                  and (party is None or party in s.deal["parties"])]
        states.sort(key=lambda deal: -deal["proposed_position"])
        return Page([deal_summary(deal) for deal in states[offset:offset + limit]], len(states))

    def deals_with_pledges(self, bound: PastBound, party: str) -> list[dict[str, Any]]:
        """The deals `party` was a party to at `bound`, each whole (with its pledges then),
        newest first."""
        states = [s for s in self.deal_states(bound).values() if party in s.deal["parties"]]
        states.sort(key=lambda s: -s.deal["proposed_position"])
        names = self._firm_names(bound)
        return [deal_view(s.deal, list(s.pledges.values()), names) for s in states]

    def _firm_names(self, bound: PastBound) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {row.code: row.name for row in conn.execute(registered_by(bound))}
