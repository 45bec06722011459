"""Reads of the read model, shaped as JSON-ready dicts; amounts are exact decimal strings."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Inexact, localcontext
from enum import StrEnum
from itertools import groupby
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, Row, Select, and_, func, or_, select

from services.projections.read_model.deal_history import (
    HistoryEvent,
    PastBound,
    counted_totals,
    fold_deals,
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
    ledger_incomplete,
    meetings,
    pledge_ledger,
    pledge_totals,
    pledges,
    recorded_events,
)
from services.projections.read_model.views import (
    Columns,
    deal_summary,
    deal_view,
    group_totals,
    iso,
    totals_items,
)

LEDGER_AMOUNTS = ("low", "high", "usd_low", "usd_high")


class Interval(StrEnum):
    """The buckets of pledges over time: calendar days, months or quarters (UTC)."""

    DAY = "day"
    MONTH = "month"
    QUARTER = "quarter"


def bucket_start(day: date, interval: Interval) -> date:
    """The first day of the bucket that holds `day`."""
    if interval is Interval.DAY:
        return day
    if interval is Interval.MONTH:
        return day.replace(day=1)
    return date(day.year, (day.month - 1) // 3 * 3 + 1, 1)


def next_bucket(start: date, interval: Interval) -> date:
    """The first day of the bucket after the one starting on `start`."""
    if interval is Interval.DAY:
        return date.fromordinal(start.toordinal() + 1)
    months = 1 if interval is Interval.MONTH else 3
    month = start.month - 1 + months
    return date(start.year + month // 12, month % 12 + 1, 1)


def buckets(first: date, last: date, interval: Interval) -> list[tuple[date, date]]:
    """(first day, last day) of each bucket from the one holding `first` to the one holding
    `last`."""
    found = []
    start = bucket_start(first, interval)
    while start <= last:
        following = next_bucket(start, interval)
        found.append((start, date.fromordinal(following.toordinal() - 1)))
        start = following
    return found


@dataclass(frozen=True)
class Page:
    """One page of a list and the number of items across all pages."""

    items: list[dict[str, Any]]
    total: int


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

    def pledge_totals(self, dimension: TotalsDimension) -> list[dict[str, Any]]:
        """Current totals per group of `dimension`, in USD and per original currency."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(pledge_totals)
                .where(pledge_totals.c.dimension == dimension.value)
                .order_by(pledge_totals.c.group_key, pledge_totals.c.currency)
            ).all()
            groups = {key: [row._mapping for row in group]
                      for key, group in groupby(rows, lambda row: row.group_key)}
            known = _firms(conn, groups) if dimension is TotalsDimension.FIRM else {}
        return totals_items(dimension, groups, known)

    # Totals by business date, from the ledger (rm_pledge_ledger): a few rows per group.

    def has_event_id_prefix(self, prefix: str) -> bool:
        """Whether any projected event's id starts with `prefix` (e.g. the demo's)."""
        with self.engine.connect() as conn:
            return conn.execute(select(recorded_events.c.position).where(
                recorded_events.c.event_id.startswith(prefix, autoescape=True)).limit(1)
            ).first() is not None

    def first_pledge_day(self) -> date | None:
        """The earliest business day on which any pledge total changed, None before any."""
        with self.engine.connect() as conn:
            first = conn.execute(select(func.min(pledge_ledger.c.starts))
                                 .where(pledge_ledger.c.period == "day")).scalar()
        return None if first is None else date.fromisoformat(first)

    def ledger_complete(self) -> bool:
        """Whether the ledger holds every event (not added to a read model that held events
        before it, and not rebuilt since)."""
        with self.engine.connect() as conn:
            return conn.execute(select(ledger_incomplete.c.since_position).limit(1)) \
                .first() is None

    def pledge_totals_on(self, dimension: TotalsDimension, day: date, up_to_position: int
                         ) -> list[dict[str, Any]]:
        """Totals per group of `dimension` as of the end of `day` (UTC), business time: the
        same answer as `pledge_totals_as_of` with that bound, from the ledger's months
        before the day and the days of its month up to it. Firm names as registered up to
        `up_to_position`."""
        with self.engine.connect() as conn:
            sums = _ledger_sums(conn, dimension, _up_to(day))
            groups = _totals_groups(sums)
            known = _firms(conn, groups, up_to_position) \
                if dimension is TotalsDimension.FIRM else {}
        return totals_items(dimension, groups, known)

    def pledges_over_time(
        self, dimension: TotalsDimension, spans: list[tuple[date, date]],
        up_to_position: int, limit: int, offset: int,
    ) -> tuple[list[dict[str, Any]], int]:
        """Per group of `dimension` (by key; `limit` of them from `offset`), its totals at
        the end of each of `spans` (consecutive buckets from `buckets`, first and last day):
        cumulative since the first pledge, not only within the window. Returns the groups
        and the number of groups in all."""
        with self.engine.connect() as conn:
            opening = _ledger_sums(conn, dimension, _up_to(date.fromordinal(
                spans[0][0].toordinal() - 1)))
            # Buckets of whole months (or quarters) are sums of month rows, days of day rows.
            period = "day" if spans[0][0] == spans[0][1] else "month"
            rows = conn.execute(
                select(pledge_ledger).where(
                    pledge_ledger.c.dimension == dimension.value,
                    pledge_ledger.c.period == period,
                    pledge_ledger.c.starts >= spans[0][0].isoformat(),
                    pledge_ledger.c.starts <= spans[-1][1].isoformat(),
                ).order_by(pledge_ledger.c.starts)
            ).all()
            with localcontext() as exact:
                exact.prec = EXACT_PRECISION
                exact.traps[Inexact] = True
                running = {k: list(v) for k, v in opening.items()}
                at_ends: list[dict[str, list[dict[str, Any]]]] = []
                pending = iter(rows)
                row = next(pending, None)
                for _, end in spans:
                    while row is not None and row.starts <= end.isoformat():
                        _add_ledger_row(running, row._mapping)
                        row = next(pending, None)
                    at_ends.append(_totals_groups(running))
            # The groups with a counted pledge at the end of some bucket, by key.
            keys = sorted({key for at_end in at_ends for key in at_end})
            page = keys[offset:offset + limit]
            known = _firms(conn, page, up_to_position) \
                if dimension is TotalsDimension.FIRM else {}
        by_group = {key: [{"starts": start.isoformat(), "ends": end.isoformat(),
                           **group_totals_or_none(at_end.get(key, []))}
                          for (start, end), at_end in zip(spans, at_ends, strict=True)]
                    for key in page}
        items = [{**_group_ref(dimension, key, known), "buckets": by_group[key]}
                 for key in page]
        return items, len(keys)

    # Past state, folded from the deals' history (rm_deal_events) on each call.

    def pledge_totals_as_of(self, dimension: TotalsDimension, bound: PastBound
                            ) -> list[dict[str, Any]]:
        """Totals per group of `dimension` as they were at `bound`, computed from every deal's
        history up to it: the cost grows with the history."""
        query = select(deal_events).where(deal_events.c.position <= bound.position)
        if bound.occurred_until is not None:
            query = query.where(deal_events.c.occurred_at <= bound.occurred_until)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(deal_events.c.position))
            states = fold_deals((HistoryEvent.of_row(row._mapping) for row in rows), bound)
            groups = counted_totals(states.values(), dimension)
            known = _firms(conn, groups, bound.position) \
                if dimension is TotalsDimension.FIRM else {}
        return totals_items(dimension, groups, known)

    def deal_as_of(self, deal_id: UUID, bound: PastBound) -> dict[str, Any] | None:
        """A deal as it was at `bound`, or None if it had not been proposed by then."""
        query = select(deal_events).where(
            deal_events.c.deal_id == deal_id, deal_events.c.position <= bound.position)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(deal_events.c.position)).all()
            state = fold_deals((HistoryEvent.of_row(row._mapping) for row in rows), bound) \
                .get(deal_id)
            if state is None:
                return None
            known = _firms(conn, {p["firm_code"] for p in state.pledges.values()},
                           bound.position)
        return deal_view(state.deal, list(state.pledges.values()),
                         {code: firm["name"] for code, firm in known.items()})

    def position_of_version(self, deal_id: UUID, version: int) -> int | None:
        """The log position of a deal's `version`-th event, None if it has no such event."""
        with self.engine.connect() as conn:
            found = conn.execute(select(deal_events.c.position).where(
                deal_events.c.deal_id == deal_id, deal_events.c.aggregate_version == version,
            )).scalar()
        return None if found is None else int(found)

    def latest_version(self, deal_id: UUID) -> int | None:
        """The version of a deal's latest projected event, None if the deal is unknown."""
        with self.engine.connect() as conn:
            found = conn.execute(select(func.max(deal_events.c.aggregate_version)).where(
                deal_events.c.deal_id == deal_id)).scalar()
        return None if found is None else int(found)

    def position_recorded_by(self, moment: datetime, known_up_to: int) -> int:
        """The highest log position, up to `known_up_to`, of an event recorded at or before
        `moment`; 0 if none."""
        with self.engine.connect() as conn:
            found = conn.execute(select(func.max(recorded_events.c.position)).where(
                recorded_events.c.recorded_at <= moment,
                recorded_events.c.position <= known_up_to,
            )).scalar()
        return 0 if found is None else int(found)

    def recorded(
        self, recorded_by: str | None = None, since: datetime | None = None,
        until: datetime | None = None, limit: int = 50, offset: int = 0,
    ) -> Page:
        """What was recorded, oldest first: by one principal, within recorded times."""
        query = select(recorded_events)
        if recorded_by is not None:
            query = query.where(recorded_events.c.recorded_by == recorded_by)
        if since is not None:
            query = query.where(recorded_events.c.recorded_at >= since)
        if until is not None:
            query = query.where(recorded_events.c.recorded_at <= until)
        ordered = query.order_by(recorded_events.c.recorded_at, recorded_events.c.position)
        with self.engine.connect() as conn:
            total = _count(conn, query)
            rows = conn.execute(ordered.limit(limit).offset(offset)).all()
        return Page([recorded_view(row) for row in rows], total)

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
        return Page([deal_summary(row._mapping) for row in rows], total)

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
        return deal_view(row._mapping, [pledge._mapping for pledge in pledge_rows],
                         {pledge.firm_code: pledge.firm_name for pledge in pledge_rows
                          if pledge.firm_name is not None})

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


def _up_to(day: date) -> tuple[str, str, str]:
    """The ledger rows whose sum is the totals as of the end of `day`: months starting
    before the day's month, and days from its month's first up to it (ISO texts)."""
    month = day.replace(day=1).isoformat()
    return month, month, day.isoformat()


def _ledger_sums(conn: Connection, dimension: TotalsDimension, bound: tuple[str, str, str]
                 ) -> dict[tuple[str, str], list[Any]]:
    """Per (group key, currency): [count, *amounts], the ledger's sum up to `bound`."""
    months_before, days_from, days_to = bound
    rows = conn.execute(select(pledge_ledger).where(
        pledge_ledger.c.dimension == dimension.value,
        or_(and_(pledge_ledger.c.period == "month", pledge_ledger.c.starts < months_before),
            and_(pledge_ledger.c.period == "day", pledge_ledger.c.starts >= days_from,
                 pledge_ledger.c.starts <= days_to)),
    ))
    sums: dict[tuple[str, str], list[Any]] = {}
    with localcontext() as exact:
        exact.prec = EXACT_PRECISION
        exact.traps[Inexact] = True
        for row in rows:
            _add_ledger_row(sums, row._mapping)
    return sums


def _add_ledger_row(sums: dict[tuple[str, str], list[Any]], row: Columns) -> None:
    entry = sums.get((row["group_key"], row["currency"]))
    if entry is None:
        sums[(row["group_key"], row["currency"])] = \
            [row["pledge_count"], *(row[c] for c in LEDGER_AMOUNTS)]
        return
    entry[0] += row["pledge_count"]
    for n, amount in enumerate(LEDGER_AMOUNTS, 1):
        entry[n] += row[amount]


def _totals_groups(sums: Mapping[tuple[str, str], list[Any]]) -> dict[str, list[dict[str, Any]]]:
    """Ledger sums as totals rows per group key, by key then currency; groups without a
    counted pledge (count 0: every pledge left) are left out, as in the live totals."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for (group_key, currency), values in sorted(sums.items()):
        if values[0] == 0:
            continue
        groups.setdefault(group_key, []).append({
            "currency": currency, "pledge_count": values[0],
            **dict(zip(LEDGER_AMOUNTS, values[1:], strict=True)),
        })
    return groups


def group_totals_or_none(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A bucket's totals: those of its group then, or zero before its first pledge."""
    if rows:
        return group_totals(rows)
    return {"pledge_count": 0, "usd": {"low": "0", "high": "0"}, "by_currency": []}


def _group_ref(dimension: TotalsDimension, key: str, known: Mapping[str, Columns]
               ) -> dict[str, Any]:
    if dimension is TotalsDimension.FIRM:
        return {"firm": {"code": key, "name": known[key]["name"] if key in known else None,
                         "country": known[key]["country"] if key in known else None}}
    return {dimension.value: key}


def _count(conn: Connection, query: Select[Any]) -> int:
    return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar_one())


def _firms(conn: Connection, codes: Collection[str], up_to_position: int | None = None
           ) -> dict[str, Columns]:
    """Registrations (name, country) of the firms among `codes`, optionally only those
    recorded at or before a log position."""
    query = select(firms.c.code, firms.c.name, firms.c.country).where(firms.c.code.in_(codes))
    if up_to_position is not None:
        query = query.where(firms.c.position <= up_to_position)
    return {row.code: row._mapping for row in conn.execute(query)}


def _event_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "position": row.position,
        "aggregate_version": row.aggregate_version,
        "type": row.type,
        "event_id": row.event_id,
        "occurred_at": iso(row.occurred_at),
        "recorded_at": iso(row.recorded_at),
        "recorded_by": row.recorded_by,
        "payload": row.payload,
        "hash": row.hash,
        "previous_hash": row.previous_hash,
    }


def recorded_view(row: Row[Any]) -> dict[str, Any]:
    """One recorded event as read answers and the event stream show it."""
    return {
        "position": row.position,
        "event_id": row.event_id,
        "type": row.type,
        "aggregate_id": str(row.aggregate_id),
        "aggregate_version": row.aggregate_version,
        "occurred_at": iso(row.occurred_at),
        "recorded_at": iso(row.recorded_at),
        "recorded_by": row.recorded_by,
        "hash": row.hash,
    }


def _firm_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "firm_id": str(row.firm_id),
        "code": row.code,
        "name": row.name,
        "country": row.country,
        "kind": row.kind,
        "registered_at": iso(row.registered_at),
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
        "occurred_at": iso(row.occurred_at),
        "recorded_at": iso(row.recorded_at),
    }
