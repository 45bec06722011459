"""The content of each page, from the read API's query layer: figures, tables and charts.

Each function answers a template context; its `grids` are the page's tables, each of which
downloads as CSV under its name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from services.projections.pages.charts import RangeBar, RangePoint, band_chart, range_chart
from services.projections.pages.display import (
    Grid,
    cell,
    compact_usd,
    currency_sums,
    grouped,
    instrument_text,
    money_text,
    schedule_text,
    tranche_amount_text,
    usd_sum,
)
from services.projections.pages.time_travel import TimeTravel
from services.projections.read_model.chain_check import ChainCheck, check_chain
from services.projections.read_model.past_lists import PastLists
from services.projections.read_model.queries import Interval, ReadModelQueries, buckets
from services.projections.read_model.tables import TotalsDimension
from services.projections.read_model.visibility import Viewer, event_for, meeting_for

LATEST_EVENTS = 10
PAGE_SIZE = 25
TOP_FIRMS = 10


def totals(queries: ReadModelQueries, dimension: TotalsDimension, travel: TimeTravel
           ) -> list[dict[str, Any]]:
    """The items of GET /v1/pledges/by-<dimension>, now or at the page's moment (from the
    ledger or the deals' history, as the API chooses: `pledge_totals_past`)."""
    if travel.past is None:
        return queries.pledge_totals(dimension)
    return queries.pledge_totals_past(dimension, travel.past.bound, travel.position)


def _usd_cells(item: dict[str, Any]) -> list[Any]:
    low, high = item["usd"]["low"], item["usd"]["high"]
    return [item["pledge_count"], cell(grouped(low), low), cell(grouped(high), high),
            cell("; ".join(money_text(m["currency"], m["low"], m["high"])
                           for m in item["by_currency"]),
                 "; ".join(f"{m['currency']} {m['low']}-{m['high']}" for m in item["by_currency"]))]


TOTAL_HEADINGS = ("pledges", "USD low", "USD high", "in original currencies")


def totals_grid(name: str, caption: str, label: str, items: list[dict[str, Any]],
                label_of: Any, travel: TimeTravel, link_of: Any = None) -> Grid:
    grid = Grid(name, caption, (label, *TOTAL_HEADINGS), numeric=frozenset({1, 2, 3}))
    for item in items:
        text = label_of(item)
        href = None if link_of is None else link_of(item)
        grid.rows.append([cell(text, text, href), *_usd_cells(item)])
    return grid


def overview(queries: ReadModelQueries, travel: TimeTravel, viewer: Viewer) -> dict[str, Any]:
    sectors = totals(queries, TotalsDimension.SECTOR, travel)
    countries = totals(queries, TotalsDimension.COUNTRY, travel)
    firms = totals(queries, TotalsDimension.FIRM, travel)
    low, high = usd_sum(sectors)
    top_firms = sorted(firms, key=lambda f: (-Decimal(f["usd"]["high"]), f["firm"]["code"]))
    top_firms = top_firms[:TOP_FIRMS]

    def firm_label(item: dict[str, Any]) -> str:
        return str(item["firm"]["name"] or item["firm"]["code"])

    grids = {
        "by-sector": totals_grid("by-sector", "Pledges by sector", "sector", sectors,
                                 lambda i: i["sector"], travel),
        "by-country": totals_grid("by-country", "Pledges by pledging firm's country", "country",
                                  countries, lambda i: i["country"], travel),
        "top-firms": totals_grid("top-firms", f"Top {TOP_FIRMS} firms by high end", "firm",
                                 top_firms, firm_label, travel,
                                 lambda i: travel.link(f"/firms/{i['firm']['code']}")),
    }
    charts = {
        "by-sector": range_chart("chart-sector", "Pledged USD by sector",
                                 [_bar(i["sector"], i) for i in sectors]),
        "by-country": range_chart("chart-country", "Pledged USD by country",
                                  [_bar(i["country"], i) for i in countries]),
        "top-firms": range_chart("chart-firms", "Pledged USD by firm, top firms",
                                 [_bar(firm_label(i), i) for i in top_firms]),
    }
    latest = latest_events(queries, viewer)
    grids["latest"] = latest
    growth = over_time(queries, travel)
    grids["over-time"] = growth["grid"]
    return {
        "headline": {
            "usd": {"low": low, "high": high,
                    "text": f"{compact_usd(low)} – {compact_usd(high)}",
                    "exact": f"${grouped(low)} – ${grouped(high)}"},
            "currencies": currency_sums(sectors),
            "pledges": sum(i["pledge_count"] for i in sectors),
        },
        "counts": {
            "deals": queries.deals(limit=1).total if travel.past is None
            else len(PastLists(queries.engine).deal_states(travel.past.bound)),
            "firms": queries.firms(limit=1, bound=travel.bound).total,
            "meetings": queries.meetings(limit=1, bound=travel.bound).total,
        },
        "grids": grids, "charts": charts, "over_time": growth,
    }


# Months shown by the over-time section; older history is summed into its first bucket.
OVER_TIME_MONTHS = 24


def over_time(queries: ReadModelQueries, travel: TimeTravel) -> dict[str, Any]:
    """Cumulative pledged USD by sector at the end of each month before the page's moment
    (from the first pledge's month, at most OVER_TIME_MONTHS back) and at the moment itself:
    a band per sector and one table, from the ledger behind `GET /v1/pledges/over-time`."""
    grid = Grid("over-time", "Cumulative pledged USD by sector, at each month's end",
                ("as of",))
    first = queries.first_pledge_day()
    if first is None or not queries.ledger_complete():
        return {"charts": {}, "grid": grid, "ready": first is None}
    until = travel.past.bound.occurred_until if travel.past is not None else None
    end = (until or datetime.now(UTC)).date()
    # The ledger knows business dates as the registry knows them now: for a moment as
    # recorded earlier, only the moment itself is shown.
    as_known_now = travel.past is None or travel.past.bound.position >= travel.position
    months = [span for span in buckets(max(first, _months_before(end, OVER_TIME_MONTHS - 1)),
                                       end, Interval.MONTH) if span[1] < end] \
        if as_known_now else []
    series: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    if months:
        items, _ = queries.pledges_over_time(TotalsDimension.SECTOR, months, travel.position,
                                             limit=100, offset=0)
        for item in items:
            series[item["sector"]] = [(b["ends"], b) for b in item["buckets"]]
    for item in totals(queries, TotalsDimension.SECTOR, travel):  # exact at any moment
        series.setdefault(item["sector"], []).append((end.isoformat(), item))
    charts: dict[str, Any] = {}
    by_day: dict[str, dict[str, dict[str, Any]]] = {}
    sectors = sorted(series)
    for sector in sectors:
        points = series[sector]
        charts[sector] = band_chart(
            f"chart-over-time-{sector}", f"{sector}: cumulative pledged USD",
            [RangePoint(day, Decimal(t["usd"]["low"]), Decimal(t["usd"]["high"]))
             for day, t in points])
        for day, t in points:
            by_day.setdefault(day, {})[sector] = t
    # One row per date, a low and a high column per sector: the chart's figures, exactly.
    grid = Grid("over-time", grid.caption, ("as of", *(
        f"{sector} USD {end}" for sector in sectors for end in ("low", "high"))),
        numeric=frozenset(range(1, 1 + 2 * len(sectors))))
    for day in sorted(by_day):
        row: list[Any] = [day]
        for sector in sectors:
            usd = by_day[day].get(sector, {}).get("usd", {"low": "0", "high": "0"})
            row += [cell(grouped(usd["low"]), usd["low"]), cell(grouped(usd["high"]), usd["high"])]
        grid.rows.append(row)
    return {"charts": charts, "grid": grid, "ready": True}


def _months_before(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def _bar(label: str, item: dict[str, Any]) -> RangeBar:
    return RangeBar(label, Decimal(item["usd"]["low"]), Decimal(item["usd"]["high"]))


def latest_events(queries: ReadModelQueries, viewer: Viewer) -> Grid:
    """The newest recorded events, newest first; who recorded each as `viewer` may see it
    (read_model/visibility)."""
    total = queries.recorded(limit=1).total
    page = queries.recorded(limit=LATEST_EVENTS, offset=max(total - LATEST_EVENTS, 0))
    items = sorted(page.items, key=lambda e: -e["position"])
    grid = Grid("latest", "Latest events", ("position", "type", "aggregate", "version",
                                             "occurred at", "recorded at", "recorded by"),
                numeric=frozenset({0, 3}))
    for event in (event_for(viewer, e) for e in items):
        grid.rows.append([event["position"], event["type"], event["aggregate_id"],
                          event["aggregate_version"], event["occurred_at"],
                          event["recorded_at"], _or_withheld(event["recorded_by"])])
    return grid


WITHHELD = "withheld"


def _or_withheld(value: Any) -> Any:
    return WITHHELD if value is None else value


DEAL_FILTERS = ("sector", "format", "status", "party")


def deal_list(queries: ReadModelQueries, travel: TimeTravel, filters: dict[str, str | None],
              page: int) -> dict[str, Any]:
    offset = (page - 1) * PAGE_SIZE
    found = queries.deals(**filters, limit=PAGE_SIZE, offset=offset) if travel.past is None \
        else PastLists(queries.engine).deals(travel.past.bound, **filters, limit=PAGE_SIZE,
                                              offset=offset)
    grid = Grid("deals", "Deals, newest first",
                ("title", "sector", "format", "status", "parties", "proposed at", "events"),
                numeric=frozenset({6}))
    for deal in found.items:
        grid.rows.append([
            cell(deal["title"], deal["title"], travel.link(f"/deals/{deal['deal_id']}")),
            deal["sector"], deal["format"], deal["status"],
            cell(", ".join(deal["parties"])), deal["proposed_at"], deal["version"],
        ])
    pages = max((found.total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    return {"grids": {"deals": grid}, "total": found.total, "page": page, "pages": pages}


def deal_page(queries: ReadModelQueries, travel: TimeTravel, viewer: Viewer, deal_id: UUID,
              events_page: int, stored_hashes: StoredHashes | None = None
              ) -> dict[str, Any] | None:
    """A deal now or at the page's moment, with its full history and whether its hash chain
    holds (recomputed from the log by `stored_hashes` where the registry is at hand); None
    if unknown (or, in the past, not yet proposed: `deal` is then None)."""
    current = queries.deal(deal_id)
    if current is None:
        return None
    deal = current if travel.past is None else queries.deal_as_of(deal_id, travel.past.bound)
    if deal is None:
        return {"deal": None, "current": current, "grids": {}}
    pledges = Grid("pledges", "Pledges (active and withdrawn)",
                   ("pledge", "firm", "status", "counted", "amount", "USD low", "USD high",
                    "units per USD", "rate source", "instrument", "tranches", "made at",
                    "revisions", "withdrawn at"),
                   numeric=frozenset({5, 6, 7, 12}))
    # Each pledge's schedule, one row per tranche (the pages' time travel shows it as then).
    schedule = Grid("tranches", "Tranche schedules", ("pledge", "instrument", "due date",
                                                      "amount"))
    for p in deal["pledges"]:
        amount = p["amount"]
        pledges.rows.append([
            p["pledge_id"],
            cell(p["firm"]["name"] or p["firm"]["code"], p["firm"]["code"],
                 travel.link(f"/firms/{p['firm']['code']}")),
            p["status"], "yes" if p["counted"] else "no",
            cell(money_text(amount["currency"], amount["low"], amount["high"]),
                 f"{amount['currency']} {amount['low']}-{amount['high']}"),
            cell(grouped(p["usd"]["low"]), p["usd"]["low"]),
            cell(grouped(p["usd"]["high"]), p["usd"]["high"]),
            p["usd"]["units_per_usd"], p["usd"]["rate_source"],
            cell(instrument_text(p["instrument"]), p["instrument"] or ""),
            cell(schedule_text(amount["currency"], p["tranches"]), len(p["tranches"])),
            p["made_at"], p["revisions"], p["withdrawn_at"] or "",
        ])
        for t in p["tranches"]:
            schedule.rows.append([
                p["pledge_id"], instrument_text(p["instrument"]), t["due_date"],
                cell(tranche_amount_text(amount["currency"], t["amount"]),
                     f"{amount['currency']} {t['amount']}")])
    agreements = Grid("agreements", "Agreements", ("kind", "what", "parties or place", "when"))
    for t in deal["tech_transfers"]:
        agreements.rows.append(["technology transfer", t["technology"],
                                f"{t['licensor']} → {t['licensee']}", t["signed_at"]])
    for jv in deal["joint_ventures"]:
        equity = ", ".join(f"{code} {share}%" for code, share in jv["equity"].items())
        agreements.rows.append(["joint venture", jv["venture_name"], equity, jv["formed_at"]])
    for f in deal["facilities"]:
        agreements.rows.append(["facility", f"{f['facility']} ({f['capacity']})", f["location"],
                                f["announced_at"]])
    # The whole history once: the chain check needs all of it, the table shows a page.
    history = deal_history(queries, deal_id)
    shown = history[(events_page - 1) * EVENTS_PAGE:events_page * EVENTS_PAGE]
    events = Grid("events", "Full event history, in version order",
                  ("version", "position", "type", "occurred at", "recorded at", "recorded by",
                   "hash", "previous hash"), numeric=frozenset({0, 1}))
    timeline = Grid("timeline", "Status timeline", ("when (occurred)", "event", "status after"))
    status = "proposed"
    for e in (event_for(viewer, e) for e in shown):
        events.rows.append([e["aggregate_version"], e["position"], e["type"], e["occurred_at"],
                            e["recorded_at"], _or_withheld(e["recorded_by"]), e["hash"],
                            e["previous_hash"]])
        status = _status_after(e["type"], e["payload"], status)
        timeline.rows.append([e["occurred_at"], e["type"], status])
    return {"deal": deal, "current": current,
            "grids": {"pledges": pledges, "tranches": schedule, "agreements": agreements,
                      "timeline": timeline, "events": events},
            "events_total": len(history), "chain": deal_chain(history, stored_hashes)}


StoredHashes = Callable[[Iterable[int]], dict[int, str | None]]
EVENTS_PAGE = 500


def deal_history(queries: ReadModelQueries, deal_id: UUID) -> list[dict[str, Any]]:
    """Every event of a known deal, in version order, read a page at a time."""
    events: list[dict[str, Any]] = []
    while True:
        page = queries.deal_events(deal_id, limit=EVENTS_PAGE, offset=len(events))
        if page is None or not page.items:
            return events
        events.extend(page.items)
        if len(events) >= page.total:
            return events


def deal_chain(history: list[dict[str, Any]], stored_hashes: StoredHashes | None
               ) -> ChainCheck:
    """Whether the deal's whole history still forms its hash chain."""
    recomputed = None if stored_hashes is None \
        else stored_hashes([e["position"] for e in history])
    return check_chain(history, recomputed)


AGREEMENTS = frozenset({"tech_transfer_signed", "joint_venture_formed", "facility_announced"})


def _status_after(event_type: str, payload: dict[str, Any], before: str) -> str:
    """The deal's status after an event, by the projector's rules (deal_history): an
    agreement makes a deal agreed, a cancellation is final."""
    if before == "cancelled" or event_type == "deal_cancelled":
        return "cancelled"
    if event_type in AGREEMENTS:
        return "agreed"
    return before


def firm_list(queries: ReadModelQueries, travel: TimeTravel, country: str | None,
              kind: str | None, page: int) -> dict[str, Any]:
    offset = (page - 1) * PAGE_SIZE
    found = queries.firms(country=country, kind=kind, limit=PAGE_SIZE, offset=offset,
                          bound=travel.bound)
    pledged = {i["firm"]["code"]: i for i in totals(queries, TotalsDimension.FIRM, travel)}
    grid = Grid("firms", "Firms", ("code", "name", "country", "kind", "pledges", "USD low",
                                   "USD high"), numeric=frozenset({4, 5, 6}))
    for firm in found.items:
        item = pledged.get(firm["code"])
        usd = [item["pledge_count"], cell(grouped(item["usd"]["low"]), item["usd"]["low"]),
               cell(grouped(item["usd"]["high"]), item["usd"]["high"])] if item else [0, "", ""]
        grid.rows.append([cell(firm["code"], firm["code"],
                               travel.link(f"/firms/{firm['code']}")),
                          firm["name"], firm["country"], firm["kind"], *usd])
    pages = max((found.total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    return {"grids": {"firms": grid}, "total": found.total, "page": page, "pages": pages}


def firm_page(queries: ReadModelQueries, travel: TimeTravel, code: str) -> dict[str, Any] | None:
    """A firm with its deals and pledges, now or at the page's moment; None if unknown (or,
    in the past, not yet registered: `firm` is then None and `current` says who it is)."""
    known = [f for f in queries.firms(limit=500).items if f["code"] == code]
    if not known:
        return None
    if travel.past is None:
        firm: dict[str, Any] | None = known[0]
        whole = [full for summary in queries.deals(party=code, limit=500).items
                 if (full := queries.deal(UUID(summary["deal_id"]))) is not None]
    else:
        past = PastLists(queries.engine)
        then = [f for f in queries.firms(limit=500, bound=travel.past.bound).items
                if f["code"] == code]
        firm = then[0] if then else None
        whole = past.deals_with_pledges(travel.past.bound, code) if firm else []
    if firm is None:
        return {"firm": None, "current": known[0], "grids": {}}
    deal_grid = Grid("deals", "Deals this firm is a party to",
                     ("title", "sector", "format", "status"))
    pledge_grid = Grid("pledges", "This firm's pledges",
                       ("deal", "pledge", "status", "amount", "USD low", "USD high",
                        "instrument", "tranches"),
                       numeric=frozenset({4, 5}))
    for deal in whole:
        deal_grid.rows.append([
            cell(deal["title"], deal["title"], travel.link(f"/deals/{deal['deal_id']}")),
            deal["sector"], deal["format"], deal["status"]])
        for p in deal["pledges"]:
            if p["firm"]["code"] != code:
                continue
            amount = p["amount"]
            pledge_grid.rows.append([
                deal["title"], p["pledge_id"], p["status"],
                cell(money_text(amount["currency"], amount["low"], amount["high"]),
                     f"{amount['currency']} {amount['low']}-{amount['high']}"),
                cell(grouped(p["usd"]["low"]), p["usd"]["low"]),
                cell(grouped(p["usd"]["high"]), p["usd"]["high"]),
                cell(instrument_text(p["instrument"]), p["instrument"] or ""),
                cell(schedule_text(amount["currency"], p["tranches"]), len(p["tranches"]))])
    totals_then = [i for i in totals(queries, TotalsDimension.FIRM, travel)
                   if i["firm"]["code"] == code]
    return {"firm": firm, "current": known[0],
            "totals": totals_then[0] if totals_then else None,
            "grids": {"deals": deal_grid, "pledges": pledge_grid}}


def meeting_list(queries: ReadModelQueries, travel: TimeTravel, viewer: Viewer, page: int
                 ) -> dict[str, Any]:
    offset = (page - 1) * PAGE_SIZE
    found = queries.meetings(limit=PAGE_SIZE, offset=offset, bound=travel.bound)
    grid = Grid("meetings", "Meetings, most recent first",
                ("held", "title", "location", "closed door", "attendees", "government bodies",
                 "sectors"))
    shown = [meeting_for(viewer, m) for m in found.items]
    for m in shown:
        grid.rows.append([m["occurred_at"], _or_withheld(m["title"]), m["location"],
                          "closed door" if m["closed_door"] else "open",
                          _joined_or_withheld(m["attendees"]),
                          _joined_or_withheld(m["government_bodies"]), ", ".join(m["sectors"])])
    pages = max((found.total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    return {"meetings": shown, "grids": {"meetings": grid}, "total": found.total,
            "page": page, "pages": pages}


def _joined_or_withheld(values: list[str] | None) -> str:
    return WITHHELD if values is None else ", ".join(values)


def recorded_grid(queries: ReadModelQueries, recorded_by: str | None, since: Any, until: Any,
                  limit: int, offset: int) -> tuple[Grid, int]:
    found = queries.recorded(recorded_by=recorded_by, since=since, until=until, limit=limit,
                             offset=offset)
    grid = Grid("recorded", "Who recorded what, oldest first",
                ("position", "recorded at", "recorded by", "type", "aggregate", "version",
                 "occurred at", "hash"), numeric=frozenset({0, 5}))
    for e in found.items:
        grid.rows.append([e["position"], e["recorded_at"], e["recorded_by"], e["type"],
                          e["aggregate_id"], e["aggregate_version"], e["occurred_at"],
                          e["hash"]])
    return grid, found.total
