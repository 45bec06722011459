"""Reads of the read model, shaped as JSON-ready dicts; amounts are exact decimal strings."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, localcontext
from enum import StrEnum
from functools import cache
from itertools import groupby
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Connection,
    Engine,
    Numeric,
    Row,
    Select,
    String,
    Text,
    bindparam,
    cast,
    func,
    select,
    type_coerce,
)

from services.projections.read_model.deal_history import (
    HistoryEvent,
    PastBound,
    counted_totals,
    fold_deals,
)
from services.projections.read_model.indian_money import decimal_text
from services.projections.read_model.progress import read_position
from services.projections.read_model.tables import (
    EXACT_PRECISION,
    READ_MODEL_PROJECTOR,
    TotalsDimension,
    deal_events,
    deal_parties,
    deals,
    exact_arithmetic,
    firms,
    ledger_incomplete,
    meetings,
    pledge_ledger,
    pledge_ledger_tree,
    pledge_totals,
    pledges,
    recorded_events,
    tree_nodes_summing,
)
from services.projections.read_model.views import (
    Columns,
    deal_summary,
    deal_view,
    firm_view,
    iso,
    meeting_view,
    money_range,
    totals_items,
)

LEDGER_AMOUNTS = ("low", "high", "usd_low", "usd_high")
ZERO_SUMS = (0, *(Decimal(0) for _ in LEDGER_AMOUNTS))
# Statements built once (building one costs more than running it). An over-time window's
# ledger rows of one period (bound `dimension`, `period`, `first` and `last`, ISO days), in
# the key's order (each group's and currency's by day): of the groups `keys` with amounts as
# text, or the counts of the groups not among `keys`.
_LEDGER = pledge_ledger.c
_IN_WINDOW = (_LEDGER.dimension == bindparam("dimension"),
              _LEDGER.period == bindparam("period"),
              _LEDGER.starts >= bindparam("first"), _LEDGER.starts <= bindparam("last"))
_IN_KEY_ORDER = (_LEDGER.starts, _LEDGER.group_key, _LEDGER.currency)
WINDOW_ROWS_OF = (
    select(_LEDGER.group_key, _LEDGER.currency, _LEDGER.starts, _LEDGER.pledge_count,
           *(type_coerce(_LEDGER[c], String) for c in LEDGER_AMOUNTS))
    .where(*_IN_WINDOW, _LEDGER.group_key.in_(bindparam("keys", expanding=True)))
    .order_by(*_IN_KEY_ORDER)
)
WINDOW_COUNTS_EXCEPT = (
    select(_LEDGER.group_key, _LEDGER.currency, _LEDGER.starts, _LEDGER.pledge_count)
    .where(*_IN_WINDOW, _LEDGER.group_key.not_in(bindparam("keys", expanding=True)))
    .order_by(*_IN_KEY_ORDER)
)
# The groups with a non-zero count in some currency as of the end of a day (the tree's
# `nodes` for it).
_TREE = pledge_ledger_tree.c
TREE_COUNTED = (
    select(_TREE.group_key).distinct()
    .where(_TREE.dimension == bindparam("dimension"),
           _TREE.node.in_(bindparam("nodes", expanding=True)))
    .group_by(_TREE.group_key, _TREE.currency)
    .having(func.sum(_TREE.pledge_count) != 0)
)


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

    def pledge_totals_past(self, dimension: TotalsDimension, bound: PastBound,
                           known_up_to: int) -> list[dict[str, Any]]:
        """Totals per group of `dimension` as they were at `bound`, for every reader of past
        totals (the API's `as_of` / `recorded_as_of`, the pages' moment). `known_up_to` is
        the position the read model reflected when the read began.

        The end of a UTC business day as known now (`bound.position` at least
        `known_up_to`), with a complete ledger, reads the ledger (`pledge_totals_on`): its
        answer is exactly the fold's. Anything else (a time within a day, a recorded
        position, a ledger not yet rebuilt) is folded from the deals' history
        (`pledge_totals_as_of`)."""
        until = bound.occurred_until
        if until is not None:
            until = until.astimezone(UTC)
            if until.time() == time.max and bound.position >= known_up_to \
                    and self.ledger_complete():
                return self.pledge_totals_on(dimension, until.date(), bound.position)
        return self.pledge_totals_as_of(dimension, bound)

    def pledge_totals_on(self, dimension: TotalsDimension, day: date, up_to_position: int
                         ) -> list[dict[str, Any]]:
        """Totals per group of `dimension` as of the end of `day` (UTC), business time: the
        same answer as `pledge_totals_as_of` with that bound, from the ledger's tree (at
        most 22 rows per group and currency, summed by the database). Firm names as
        registered up to `up_to_position`."""
        with self.engine.connect() as conn:
            groups = _totals_groups(_tree_sums(conn, dimension, day))
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
        and the number of groups in all.

        The totals before the window come from the tree, each bucket's change from the
        ledger's month rows (day rows for days). A group counted at the window's end (the
        tree again) is listed; any other group's counts are run through the buckets to see
        whether it was counted at an earlier bucket's end. Amounts are read, and buckets
        built, for the page's groups only."""
        first, last = spans[0][0], spans[-1][1]
        window = {"dimension": dimension.value,
                  # Buckets of whole months (or quarters) sum month rows, days day rows.
                  "period": "day" if spans[0][0] == spans[0][1] else "month",
                  "first": first.isoformat(), "last": last.isoformat()}
        ends = [end.isoformat() for _, end in spans]
        with self.engine.connect() as conn:
            opening = _tree_sums(conn, dimension, date.fromordinal(first.toordinal() - 1))
            before: dict[str, dict[str, list[Any]]] = {}
            for (key, currency), values in opening.items():
                before.setdefault(key, {})[currency] = values
            at_end = set(conn.execute(TREE_COUNTED, {
                "dimension": dimension.value, "nodes": tree_nodes_summing(last)}).scalars())
            # A group counted before the window but not at its end changed within it.
            others = _changes_by_bucket(conn.execute(
                WINDOW_COUNTS_EXCEPT, {**window, "keys": sorted(at_end)}), ends)
            keys = sorted(at_end | {key for key, changes in others.items()
                                    if _counted_at_some_end(before.get(key, {}), changes)})
            page = keys[offset:offset + limit]
            changes = _changes_by_bucket(conn.execute(WINDOW_ROWS_OF, {**window, "keys": page}),
                                         ends) if page else {}
            known = _firms(conn, page, up_to_position) \
                if dimension is TotalsDimension.FIRM else {}
        texts = [(start.isoformat(), end) for (start, _), end in zip(spans, ends, strict=True)]
        items = [{**_group_ref(dimension, key, known),
                  "buckets": _group_buckets(texts, before.get(key, {}), changes.get(key, {}))}
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
        offset: int = 0, bound: PastBound | None = None,
    ) -> Page:
        """Firms by code, optionally of one country or kind; with `bound`, those registered
        by then (firms never change once registered)."""
        query = select(firms) if bound is None else registered_by(bound)
        if country is not None:
            query = query.where(firms.c.country == country)
        if kind is not None:
            query = query.where(firms.c.kind == kind)
        with self.engine.connect() as conn:
            total = _count(conn, query)
            rows = conn.execute(query.order_by(firms.c.code).limit(limit).offset(offset)).all()
        return Page([firm_view(row._mapping) for row in rows], total)

    def meetings(self, limit: int = 50, offset: int = 0, bound: PastBound | None = None
                 ) -> Page:
        """Meetings, most recent first; with `bound`, those recorded and held by then."""
        query = select(meetings)
        if bound is not None:
            query = query.where(meetings.c.position <= bound.position)
            if bound.occurred_until is not None:
                query = query.where(meetings.c.occurred_at <= bound.occurred_until)
        with self.engine.connect() as conn:
            total = _count(conn, query)
            rows = conn.execute(
                query.order_by(meetings.c.occurred_at.desc(), meetings.c.position.desc())
                .limit(limit).offset(offset)
            ).all()
        return Page([meeting_view(row._mapping) for row in rows], total)


def _tree_sums(conn: Connection, dimension: TotalsDimension, day: date
               ) -> dict[tuple[str, str], list[Any]]:
    """Per (group key, currency): [count, *amounts], the totals as of the end of `day`: the
    sum of the tree's nodes that tile the days up to it, added up by the database (exact
    NUMERIC on PostgreSQL; on SQLite, which sums decimal text as floats, the texts joined
    and added here), so one row per group and currency crosses to Python."""
    rows = conn.execute(_tree_sums_query(conn.dialect.name),
                        {"dimension": dimension.value, "nodes": tree_nodes_summing(day)})
    with exact_arithmetic():
        return {(key, currency): [int(count), *(_sum_of_texts(t) for t in amounts)]
                for key, currency, count, *amounts in rows}


@cache
def _tree_sums_query(dialect: str) -> Select[Any]:
    """`_tree_sums`' statement, built once per dialect (building it costs more than running
    it): bound `dimension` and `nodes`."""
    tree = pledge_ledger_tree
    return (select(tree.c.group_key, tree.c.currency, func.sum(tree.c.pledge_count),
                   *(_exact_sum(dialect, tree.c[c]) for c in LEDGER_AMOUNTS))
            .where(tree.c.dimension == bindparam("dimension"),
                   tree.c.node.in_(bindparam("nodes", expanding=True)))
            .group_by(tree.c.group_key, tree.c.currency))


def _exact_sum(dialect: str, column: Any) -> Any:
    """A column's sum as text that `_sum_of_texts` reads exactly."""
    if dialect == "postgresql":
        return cast(func.sum(cast(column, Numeric)), Text)
    return func.group_concat(type_coerce(column, String), " ", type_=String)


def _sum_of_texts(text: str) -> Decimal:
    """The sum of decimals written as texts separated by spaces (exact context expected)."""
    parts = text.split(" ")
    total = Decimal(parts[0])
    for part in parts[1:]:
        total += Decimal(part)
    return total


def _changes_by_bucket(rows: Any, ends: list[str]
                       ) -> dict[str, dict[str, list[tuple[int, Any]]]]:
    """Ledger rows (group key, currency, starts, count, ...), by day, as each group's and
    currency's changes with the bucket each falls in (`ends`: the buckets' last days)."""
    changes: dict[str, dict[str, list[tuple[int, Any]]]] = {}
    for row in rows:
        changes.setdefault(row[0], {}).setdefault(row[1], []).append(
            (bisect_left(ends, row[2]), row))
    return changes


def _counted_at_some_end(opening: Mapping[str, list[Any]],
                         changes: Mapping[str, list[tuple[int, Any]]]) -> bool:
    """Whether some currency of a group has a non-zero count at the end of some bucket,
    from its sums before the window and its changes by bucket (ascending)."""
    for currency in opening.keys() | changes.keys():
        count = opening[currency][0] if currency in opening else 0
        unchecked = 0  # the first bucket whose end is not checked yet
        for bucket, row in changes.get(currency, ()):
            if bucket > unchecked:
                if count != 0:  # held from the end of `unchecked` to before `bucket`
                    return True
                unchecked = bucket
            count += row[3]
        if count != 0:
            return True
    return False


def _group_buckets(spans: list[tuple[str, str]], opening: Mapping[str, list[Any]],
                   changes: Mapping[str, list[tuple[int, Any]]]) -> list[dict[str, Any]]:
    """One group's totals at the end of each bucket (first and last day, ISO), as
    `views.group_totals` shows them, from its sums before the window per currency and its
    changes (rows of the ledger, amounts as text) by bucket. Amounts become decimals and
    text only where they changed; a bucket where nothing changed shares its predecessor's
    (read-only) `usd` and `by_currency`."""
    # Each currency's sums at the end of each bucket where they changed.
    changed_at: dict[int, dict[str, list[Any]]] = {}
    with exact_arithmetic():
        for currency, rows in changes.items():
            entry: Sequence[Any] = opening.get(currency, ZERO_SUMS)
            for bucket, row in rows:
                entry = [entry[0] + row[3], entry[1] + Decimal(row[4]),
                         entry[2] + Decimal(row[5]), entry[3] + Decimal(row[6]),
                         entry[4] + Decimal(row[7])]
                changed_at.setdefault(bucket, {})[currency] = entry
    with localcontext() as wide:  # as `group_totals`: rounding is not trapped in the views
        wide.prec = EXACT_PRECISION
        current = dict(opening)
        views: dict[str, dict[str, Any]] = {}
        count, usd, by_currency = _bucket_totals(current, views)
        found = []
        for bucket, (starts, ends) in enumerate(spans):
            changed = changed_at.get(bucket)
            if changed is not None:
                for currency, entry in changed.items():
                    current[currency] = entry
                    views.pop(currency, None)
                count, usd, by_currency = _bucket_totals(current, views)
            found.append({"starts": starts, "ends": ends, "pledge_count": count, "usd": usd,
                          "by_currency": by_currency})
    return found


def _bucket_totals(current: Mapping[str, Sequence[Any]], views: dict[str, dict[str, Any]]
                   ) -> tuple[int, dict[str, str], list[dict[str, Any]]]:
    """A group's count, USD range and ranges by currency (`views.group_totals`) from its
    sums per currency; counted currencies only (none left: zero). `views` keeps each
    currency's range view until its sums change. Runs at EXACT_PRECISION."""
    counted = sorted(c for c, entry in current.items() if entry[0] != 0)
    if not counted:
        return 0, {"low": "0", "high": "0"}, []
    if len(counted) == 1:  # the USD range is the currency's: the same text for the same value
        currency = counted[0]
        entry = current[currency]
        view = views.get(currency)
        if view is None:
            view = views[currency] = money_range(currency, entry[1], entry[2])
        return entry[0], {
            "low": view["low"] if entry[3] == entry[1] else decimal_text(entry[3]),
            "high": view["high"] if entry[4] == entry[2] else decimal_text(entry[4]),
        }, [view]
    count, usd_low, usd_high = 0, Decimal(0), Decimal(0)
    by_currency = []
    for currency in counted:
        entry = current[currency]
        count += entry[0]
        usd_low += entry[3]
        usd_high += entry[4]
        view = views.get(currency)
        if view is None:
            view = views[currency] = money_range(currency, entry[1], entry[2])
        by_currency.append(view)
    return count, {"low": decimal_text(usd_low), "high": decimal_text(usd_high)}, by_currency


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


def _group_ref(dimension: TotalsDimension, key: str, known: Mapping[str, Columns]
               ) -> dict[str, Any]:
    if dimension is TotalsDimension.FIRM:
        return {"firm": {"code": key, "name": known[key]["name"] if key in known else None,
                         "country": known[key]["country"] if key in known else None}}
    return {dimension.value: key}


def registered_by(bound: PastBound) -> Select[Any]:
    """The firms registered (recorded, and by business time) by `bound`."""
    query = select(firms).where(firms.c.position <= bound.position)
    if bound.occurred_until is not None:
        query = query.where(firms.c.registered_at <= bound.occurred_until)
    return query


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
