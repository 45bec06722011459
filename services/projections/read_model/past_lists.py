"""The lists of deals, firms and meetings as they were at a past bound (a business time, a
recorded position, or both), for the pages' time travel.

Deals are folded from their history (rm_deal_events) by the projector's own rules
(`deal_history.fold_deals`), so a past list costs O(history) like every other past deal view;
firms and meetings are never changed once recorded, so their past is a filter on the rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.engine import Engine

from services.projections.read_model.deal_history import (
    DealState,
    HistoryEvent,
    PastBound,
    fold_deals,
)
from services.projections.read_model.queries import Page
from services.projections.read_model.tables import deal_events, firms, meetings
from services.projections.read_model.views import deal_summary, deal_view, firm_view, meeting_view


class PastLists:
    """What the pages list when they show the past."""

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

    def firms(self, bound: PastBound, country: str | None = None, kind: str | None = None,
              limit: int = 50, offset: int = 0) -> Page:
        """Firms registered by `bound`, by code."""
        query = _registered_by(bound)
        if country is not None:
            query = query.where(firms.c.country == country)
        if kind is not None:
            query = query.where(firms.c.kind == kind)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(firms.c.code)).all()
        return Page([firm_view(row._mapping) for row in rows[offset:offset + limit]], len(rows))

    def meetings(self, bound: PastBound, limit: int = 50, offset: int = 0) -> Page:
        """Meetings recorded and held by `bound`, most recent first."""
        query = select(meetings).where(meetings.c.position <= bound.position)
        if bound.occurred_until is not None:
            query = query.where(meetings.c.occurred_at <= bound.occurred_until)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(meetings.c.occurred_at.desc(),
                                               meetings.c.position.desc())).all()
        return Page([meeting_view(row._mapping) for row in rows[offset:offset + limit]], len(rows))

    def counts(self, bound: PastBound) -> dict[str, int]:
        """How many deals, firms and meetings the lists hold at `bound`."""
        return {"deals": len(self.deal_states(bound)),
                "firms": self.firms(bound, limit=0).total,
                "meetings": self.meetings(bound, limit=0).total}

    def _firm_names(self, bound: PastBound) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {row.code: row.name for row in conn.execute(_registered_by(bound))}


def _registered_by(bound: PastBound) -> Select[Any]:
    query = select(firms).where(firms.c.position <= bound.position)
    if bound.occurred_until is not None:
        query = query.where(firms.c.registered_at <= bound.occurred_until)
    return query
