"""Reads of the read model, shaped as JSON-ready dicts; amounts are exact decimal strings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from itertools import groupby
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, Row, Select, func, select

from services.projections.read_model.indian_money import (
    decimal_text,
    in_crore,
    inr_range_display,
)
from services.projections.read_model.progress import read_position
from services.projections.read_model.tables import (
    EXACT_PRECISION,
    READ_MODEL_PROJECTOR,
    TotalsDimension,
    deal_events,
    deal_parties,
    deals,
    firms,
    meetings,
    pledge_totals,
    pledges,
)


@dataclass(frozen=True)
class Page:
    """One page of a list and the number of items across all pages."""

    items: list[dict[str, Any]]
    total: int


def money_range(currency: str, low: Decimal, high: Decimal) -> dict[str, Any]:
    """A range in its own currency; rupees also in crore and as Indian readers write them."""
    view: dict[str, Any] = {
        "currency": currency, "low": decimal_text(low), "high": decimal_text(high),
    }
    if currency == "INR":
        view["crore"] = {"low": decimal_text(in_crore(low)), "high": decimal_text(in_crore(high))}
        view["display"] = inr_range_display(low, high)
    return view


class ReadModelQueries:
    """What the query API can ask of the read model."""

    def __init__(self, engine: Engine, projector_name: str = READ_MODEL_PROJECTOR) -> None:
        self.engine = engine
        self.projector_name = projector_name

    def position(self) -> int:
        """The log position the read model reflects; 0 before any event."""
        with self.engine.connect() as conn:
            return read_position(conn, self.projector_name)

    # Pledge totals: active pledges of deals not cancelled.

    def pledges_by_sector(self) -> list[dict[str, Any]]:
        return [
            {"sector": key, **totals}
            for key, totals in self._totals(TotalsDimension.SECTOR).items()
        ]

    def pledges_by_country(self) -> list[dict[str, Any]]:
        return [
            {"country": key, **totals}
            for key, totals in self._totals(TotalsDimension.COUNTRY).items()
        ]

    def pledges_by_firm(self) -> list[dict[str, Any]]:
        totals = self._totals(TotalsDimension.FIRM)
        with self.engine.connect() as conn:
            known = {
                row.code: row
                for row in conn.execute(
                    select(firms.c.code, firms.c.name, firms.c.country)
                    .where(firms.c.code.in_(list(totals)))
                )
            }
        # A firm's registration may not be projected yet where events arrive by partition.
        return [
            {"firm": {"code": code,
                      "name": known[code].name if code in known else None,
                      "country": known[code].country if code in known else None},
             **group}
            for code, group in totals.items()
        ]

    def _totals(self, dimension: TotalsDimension) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(pledge_totals)
                .where(pledge_totals.c.dimension == dimension.value)
                .order_by(pledge_totals.c.group_key, pledge_totals.c.currency)
            ).all()
        by_key = groupby(rows, lambda row: row.group_key)
        return {key: _group_totals(list(group)) for key, group in by_key}

    # Deals

    def deals(
        self,
        sector: str | None = None,
        format: str | None = None,
        status: str | None = None,
        party: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page:
        """Deals newest first, optionally filtered; each without its pledges."""
        query = select(deals)
        for column, wanted in (("sector", sector), ("format", format), ("status", status)):
            if wanted is not None:
                query = query.where(deals.c[column] == wanted)
        if party is not None:
            query = query.where(deals.c.deal_id.in_(
                select(deal_parties.c.deal_id).where(deal_parties.c.firm_code == party)
            ))
        with self.engine.connect() as conn:
            total = _count(conn, query)
            rows = conn.execute(
                query.order_by(deals.c.proposed_position.desc()).limit(limit).offset(offset)
            ).all()
        return Page([_deal_summary(row) for row in rows], total)

    def deal(self, deal_id: UUID) -> dict[str, Any] | None:
        """A deal's current state with all its pledges (withdrawn too), or None if unknown."""
        with self.engine.connect() as conn:
            row = conn.execute(select(deals).where(deals.c.deal_id == deal_id)).first()
            if row is None:
                return None
            pledge_rows = conn.execute(
                select(pledges, firms.c.name.label("firm_name"))
                .outerjoin(firms, firms.c.code == pledges.c.firm_code)
                .where(pledges.c.deal_id == deal_id)
                .order_by(pledges.c.position)
            ).all()
        return {
            **_deal_summary(row),
            "description": row.description,
            "tech_transfers": row.tech_transfers,
            "joint_ventures": row.joint_ventures,
            "facilities": row.facilities,
            "cancellation": row.cancellation,
            "pledges": [_pledge_view(pledge) for pledge in pledge_rows],
        }

    def deal_events(self, deal_id: UUID, limit: int = 50, offset: int = 0) -> Page | None:
        """A deal's events in version order, or None if the deal is unknown."""
        query = select(deal_events).where(deal_events.c.deal_id == deal_id)
        with self.engine.connect() as conn:
            if conn.execute(select(deals.c.deal_id).where(deals.c.deal_id == deal_id)).first() \
                    is None:
                return None
            total = _count(conn, query)
            rows = conn.execute(
                query.order_by(deal_events.c.aggregate_version).limit(limit).offset(offset)
            ).all()
        return Page([_event_view(row) for row in rows], total)

    # Firms and meetings

    def firms(
        self, country: str | None = None, kind: str | None = None, limit: int = 50,
        offset: int = 0,
    ) -> Page:
        """Firms by code, optionally of one country or kind."""
        query = select(firms)
        if country is not None:
            query = query.where(firms.c.country == country)
        if kind is not None:
            query = query.where(firms.c.kind == kind)
        with self.engine.connect() as conn:
            total = _count(conn, query)
            rows = conn.execute(query.order_by(firms.c.code).limit(limit).offset(offset)).all()
        return Page([_firm_view(row) for row in rows], total)

    def meetings(self, limit: int = 50, offset: int = 0) -> Page:
        """Meetings, most recent first."""
        query = select(meetings)
        with self.engine.connect() as conn:
            total = _count(conn, query)
            rows = conn.execute(
                query.order_by(meetings.c.occurred_at.desc(), meetings.c.position.desc())
                .limit(limit).offset(offset)
            ).all()
        return Page([_meeting_view(row) for row in rows], total)


def _count(conn: Connection, query: Select[Any]) -> int:
    return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar_one())


def _group_totals(rows: Sequence[Row[Any]]) -> dict[str, Any]:
    """One group's totals from its rows, one row per currency."""
    with localcontext() as exact:
        exact.prec = EXACT_PRECISION
        usd_low = sum((row.usd_low for row in rows), Decimal(0))
        usd_high = sum((row.usd_high for row in rows), Decimal(0))
    return {
        "pledge_count": sum(row.pledge_count for row in rows),
        "usd": {"low": decimal_text(usd_low), "high": decimal_text(usd_high)},
        "by_currency": [money_range(row.currency, row.low, row.high) for row in rows],
    }


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def _deal_summary(row: Row[Any]) -> dict[str, Any]:
    return {
        "deal_id": str(row.deal_id),
        "title": row.title,
        "format": row.format,
        "sector": row.sector,
        "status": row.status,
        "parties": row.parties,
        "version": row.version,
        "proposed_at": _iso(row.proposed_at),
        "updated_at": _iso(row.updated_at),
        "last_position": row.last_position,
    }


def _pledge_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "pledge_id": row.pledge_id,
        "firm": {"code": row.firm_code, "name": row.firm_name, "country": row.firm_country},
        "status": row.status,
        "counted": row.counted,
        "amount": money_range(row.currency, row.low, row.high),
        "usd": {
            "low": decimal_text(row.usd_low),
            "high": decimal_text(row.usd_high),
            "units_per_usd": decimal_text(row.units_per_usd),
            "rate_source": row.rate_source,
        },
        "made_at": _iso(row.made_at),
        "revisions": row.revisions,
        "revised_at": _iso(row.revised_at),
        "revision_reason": row.revision_reason,
        "withdrawn_at": _iso(row.withdrawn_at),
        "withdrawal_reason": row.withdrawal_reason,
    }


def _event_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "position": row.position,
        "aggregate_version": row.aggregate_version,
        "type": row.type,
        "event_id": row.event_id,
        "occurred_at": _iso(row.occurred_at),
        "recorded_at": _iso(row.recorded_at),
        "recorded_by": row.recorded_by,
        "payload": row.payload,
        "hash": row.hash,
        "previous_hash": row.previous_hash,
    }


def _firm_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "firm_id": str(row.firm_id),
        "code": row.code,
        "name": row.name,
        "country": row.country,
        "kind": row.kind,
        "registered_at": _iso(row.registered_at),
    }


def _meeting_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "meeting_id": str(row.meeting_id),
        "title": row.title,
        "location": row.location,
        "closed_door": row.closed_door,
        "attendees": row.attendees,
        "government_bodies": row.government_bodies,
        "sectors": row.sectors,
        "summary": row.summary,
        "occurred_at": _iso(row.occurred_at),
        "recorded_at": _iso(row.recorded_at),
    }
