"""The JSON shapes of the read API's answers, from read-model rows or their in-memory twins.

Live answers (rows of rm_deals, rm_pledges, rm_pledge_totals) and past answers (folded from a
deal's history by `deal_history`) go through these same functions, so both have one shape.
Amounts are exact decimal strings; rupees are also shown in crore, as Indian readers expect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any

from services.projections.read_model.indian_money import (
    decimal_text,
    in_crore,
    inr_range_display,
)
from services.projections.read_model.tables import EXACT_PRECISION, TotalsDimension

# A row's columns by name: a SQLAlchemy RowMapping or a plain dict with the same keys.
Columns = Mapping[Any, Any]


def money_range(currency: str, low: Decimal, high: Decimal) -> dict[str, Any]:
    """A range in its own currency; rupees also in crore and as Indian readers write them."""
    view: dict[str, Any] = {
        "currency": currency, "low": decimal_text(low), "high": decimal_text(high),
    }
    if currency == "INR":
        view["crore"] = {"low": decimal_text(in_crore(low)), "high": decimal_text(in_crore(high))}
        view["display"] = inr_range_display(low, high)
    return view


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def deal_summary(deal: Columns) -> dict[str, Any]:
    """A deal without its pledges, from the columns of rm_deals."""
    return {
        "deal_id": str(deal["deal_id"]),
        "title": deal["title"],
        "format": deal["format"],
        "sector": deal["sector"],
        "status": deal["status"],
        "parties": deal["parties"],
        "version": deal["version"],
        "proposed_at": iso(deal["proposed_at"]),
        "updated_at": iso(deal["updated_at"]),
        "last_position": deal["last_position"],
    }


def firm_view(firm: Columns) -> dict[str, Any]:
    """A registered firm, from the columns of rm_firms."""
    return {
        "firm_id": str(firm["firm_id"]),
        "code": firm["code"],
        "name": firm["name"],
        "country": firm["country"],
        "kind": firm["kind"],
        "registered_at": iso(firm["registered_at"]),
    }


def meeting_view(meeting: Columns) -> dict[str, Any]:
    """A meeting, from the columns of rm_meetings."""
    return {
        "meeting_id": str(meeting["meeting_id"]),
        "title": meeting["title"],
        "location": meeting["location"],
        "closed_door": meeting["closed_door"],
        "attendees": meeting["attendees"],
        "government_bodies": meeting["government_bodies"],
        "sectors": meeting["sectors"],
        "summary": meeting["summary"],
        "occurred_at": iso(meeting["occurred_at"]),
        "recorded_at": iso(meeting["recorded_at"]),
    }


def deal_view(deal: Columns, pledges: Sequence[Columns],
              firm_names: Mapping[str, str]) -> dict[str, Any]:
    """A deal with its agreements and all its pledges (withdrawn too), in the order made."""
    return {
        **deal_summary(deal),
        "description": deal["description"],
        "tech_transfers": deal["tech_transfers"],
        "joint_ventures": deal["joint_ventures"],
        "facilities": deal["facilities"],
        "cancellation": deal["cancellation"],
        "pledges": [pledge_view(pledge, firm_names.get(pledge["firm_code"]))
                    for pledge in pledges],
    }


def pledge_view(pledge: Columns, firm_name: str | None) -> dict[str, Any]:
    """One pledge from the columns of rm_pledges; the firm's name where it is registered."""
    return {
        "pledge_id": pledge["pledge_id"],
        "firm": {"code": pledge["firm_code"], "name": firm_name,
                 "country": pledge["firm_country"]},
        "status": pledge["status"],
        "counted": pledge["counted"],
        "amount": money_range(pledge["currency"], pledge["low"], pledge["high"]),
        "usd": {
            "low": decimal_text(pledge["usd_low"]),
            "high": decimal_text(pledge["usd_high"]),
            "units_per_usd": decimal_text(pledge["units_per_usd"]),
            "rate_source": pledge["rate_source"],
        },
        "instrument": pledge["instrument"],
        "tranches": [{"due_date": t["due_date"], "amount": t["amount"]}
                     for t in pledge["tranches"]],
        "made_at": iso(pledge["made_at"]),
        "revisions": pledge["revisions"],
        "revised_at": iso(pledge["revised_at"]),
        "revision_reason": pledge["revision_reason"],
        "withdrawn_at": iso(pledge["withdrawn_at"]),
        "withdrawal_reason": pledge["withdrawal_reason"],
    }


def group_totals(rows: Sequence[Columns]) -> dict[str, Any]:
    """One group's totals from its columns of rm_pledge_totals, one mapping per currency."""
    with localcontext() as exact:
        exact.prec = EXACT_PRECISION
        usd_low = sum((row["usd_low"] for row in rows), Decimal(0))
        usd_high = sum((row["usd_high"] for row in rows), Decimal(0))
    return {
        "pledge_count": sum(row["pledge_count"] for row in rows),
        "usd": {"low": decimal_text(usd_low), "high": decimal_text(usd_high)},
        "by_currency": [money_range(row["currency"], row["low"], row["high"]) for row in rows],
    }


def totals_items(
    dimension: TotalsDimension,
    groups: Mapping[str, Sequence[Columns]],
    firms: Mapping[str, Columns],
) -> list[dict[str, Any]]:
    """The items of a totals answer, in the order of `groups` (by key, then currency).

    `firms` maps a firm code to its registration (name, country); only by-firm answers use it.
    """
    if dimension is TotalsDimension.FIRM:
        # A firm's registration may not be projected yet where events arrive by partition.
        return [
            {"firm": {"code": code,
                      "name": firms[code]["name"] if code in firms else None,
                      "country": firms[code]["country"] if code in firms else None},
             **group_totals(rows)}
            for code, rows in groups.items()
        ]
    return [{dimension.value: key, **group_totals(rows)} for key, rows in groups.items()]
