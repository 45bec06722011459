"""What the pages show: money as people read it, and tables that also download as CSV.

Figures come from the read API's own answers (read_model.views); only their text changes
here, so a page and `GET /v1/...` never disagree.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from services.projections.read_model.indian_money import decimal_text, inr_range_display

SYMBOLS = {"USD": "$", "JPY": "¥", "INR": "₹", "EUR": "€"}


def grouped(value: Decimal | str) -> str:
    """An exact amount with thousands separators: "25000000" -> "25,000,000"."""
    amount = Decimal(value)
    whole, dot, fraction = decimal_text(amount).partition(".")
    sign = "-" if whole.startswith("-") else ""
    return f"{sign}{int(whole.lstrip('-')):,}{dot}{fraction}"


def compact_usd(value: Decimal | str) -> str:
    """Dollars rounded for a headline or an axis: $25M, $1.5B, $950K."""
    amount = Decimal(value)
    for size, unit in ((Decimal(10) ** 9, "B"), (Decimal(10) ** 6, "M"), (Decimal(10) ** 3, "K")):
        if abs(amount) >= size:
            return f"${decimal_text(round(amount / size, 2))}{unit}"
    return f"${decimal_text(round(amount, 2))}"


def money_text(currency: str, low: Decimal | str, high: Decimal | str) -> str:
    """A range in its own currency, both ends always shown: "₹860–3,500 crore",
    "¥1,450,000,000–7,250,000,000"."""
    if currency == "INR":
        return inr_range_display(Decimal(low), Decimal(high))
    symbol = SYMBOLS.get(currency, currency + " ")
    if Decimal(low) == Decimal(high):
        return f"{symbol}{grouped(low)}"
    return f"{symbol}{grouped(low)}–{grouped(high)}"


INSTRUMENT_NAMES = {"equity": "equity", "debt": "debt", "grant": "grant",
                    "in_kind_technology": "in-kind technology"}
NOT_STATED = "not stated"


def instrument_text(instrument: str | None) -> str:
    """A pledge's instrument as people read it; "not stated" when it says none."""
    return NOT_STATED if instrument is None else INSTRUMENT_NAMES.get(instrument, instrument)


def schedule_text(currency: str, tranches: Sequence[dict[str, Any]]) -> str:
    """A pledge's schedule in one cell: "none", or the count and the first and last due
    dates, "3 tranches, 2026-03-31 to 2028-03-31"."""
    if not tranches:
        return "none"
    if len(tranches) == 1:
        only = tranches[0]
        return f"1 tranche, {only['due_date']}: {tranche_amount_text(currency, only['amount'])}"
    return f"{len(tranches)} tranches, {tranches[0]['due_date']} to {tranches[-1]['due_date']}"


def tranche_amount_text(currency: str, amount: Decimal | str) -> str:
    """One amount in its currency, grouped: "USD 25,000,000"."""
    return f"{currency} {grouped(amount)}"


def currency_sums(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per original currency, the sum over groups of a totals answer's `by_currency`."""
    sums: dict[str, list[Decimal]] = {}
    for item in items:
        for money in item["by_currency"]:
            ends = sums.setdefault(money["currency"], [Decimal(0), Decimal(0)])
            ends[0] += Decimal(money["low"])
            ends[1] += Decimal(money["high"])
    return [{"currency": currency, "low": decimal_text(low), "high": decimal_text(high),
             "text": money_text(currency, low, high)}
            for currency, (low, high) in sorted(sums.items())]


def usd_sum(items: Iterable[dict[str, Any]]) -> tuple[Decimal, Decimal]:
    low = high = Decimal(0)
    for item in items:
        low += Decimal(item["usd"]["low"])
        high += Decimal(item["usd"]["high"])
    return low, high


@dataclass
class Grid:
    """A table as a page shows it and as its CSV download holds it: one name per page,
    headings, and rows of cells (text as shown; the CSV keeps exact figures)."""

    name: str
    caption: str
    headings: Sequence[str]
    rows: list[Sequence[Any]] = field(default_factory=list)
    numeric: frozenset[int] = frozenset()

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(self.headings)
        for row in self.rows:
            writer.writerow(["" if cell is None else _csv_cell(cell) for cell in row])
        return out.getvalue()


def _csv_cell(cell: Any) -> str:
    text = str(cell.get("csv", cell.get("text", ""))) if isinstance(cell, dict) else str(cell)
    # A cell beginning with = + - @ would run as a formula in a spreadsheet.
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True


def cell(text: str, csv_value: Any = None, href: str | None = None) -> dict[str, Any]:
    """A cell whose shown text differs from its CSV value, or that links somewhere."""
    return {"text": text, "csv": text if csv_value is None else csv_value, "href": href}
