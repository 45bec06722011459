"""What each chart shows, as data for the browser: one low–high range per group, never a
midpoint.

A spec goes into the page as a JSON island (`<script type="application/json">`, rendered
with Jinja's `tojson`); static/charts.js draws it with the vendored Chart.js (range bars as
floating bars, bands as a low and a high line with the fill between). Amounts stay exact
decimal strings, as the read API gives them. Each spec carries its title (the canvas's
accessible name) and a text summary (its description); the page's table beside the chart
holds the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from services.projections.pages.display import compact_usd
from services.projections.read_model.indian_money import decimal_text


@dataclass(frozen=True)
class RangeBar:
    label: str
    low: Decimal
    high: Decimal


@dataclass(frozen=True)
class RangePoint:
    """The cumulative low–high range at the end of one bucket."""

    label: str  # the bucket's last day
    low: Decimal
    high: Decimal


def range_chart(chart_id: str, title: str, bars: list[RangeBar]) -> dict[str, Any]:
    """Horizontal floating bars, one [low, high] per group, on one dollar scale from 0."""
    return {
        "id": chart_id, "kind": "range", "title": title,
        "summary": "Pledged USD, low to high. " + "; ".join(
            f"{bar.label}: {compact_usd(bar.low)}–{compact_usd(bar.high)}" for bar in bars),
        "labels": [bar.label for bar in bars],
        "ranges": [[decimal_text(bar.low), decimal_text(bar.high)] for bar in bars],
    }


def band_chart(chart_id: str, title: str, points: list[RangePoint]) -> dict[str, Any]:
    """A cumulative range over time: the band between the low and the high line, both
    drawn, on one dollar scale from 0."""
    summary = "Cumulative pledged USD, low to high."
    if points:
        first, last = points[0], points[-1]
        summary += (f" From {first.label} to {last.label}; at the end "
                    f"{compact_usd(last.low)}–{compact_usd(last.high)}.")
    return {
        "id": chart_id, "kind": "band", "title": title, "summary": summary,
        "labels": [point.label for point in points],
        "low": [decimal_text(point.low) for point in points],
        "high": [decimal_text(point.high) for point in points],
    }
