"""Range charts drawn as SVG on the server: one low–high bar per group, never a midpoint.

Server-side SVG needs no script and no third-party files, scales to any width, and carries
its own text alternative (<title>, <desc>, one <title> per bar); the page puts the same
figures in a table beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from markupsafe import Markup, escape

from services.projections.pages.display import compact_usd

ROW = 28
LABEL = 190
PLOT = 560
RIGHT = 20
TOP = 24


@dataclass(frozen=True)
class RangeBar:
    label: str
    low: Decimal
    high: Decimal


def range_chart(chart_id: str, title: str, bars: list[RangeBar]) -> Markup:
    """An accessible SVG of `bars` on one dollar scale from 0 to the largest high end."""
    if not bars:
        return Markup('<p class="empty">No active pledges.</p>')
    top = max((bar.high for bar in bars), default=Decimal(0)) or Decimal(1)
    height = TOP + ROW * len(bars) + 8
    width = LABEL + PLOT + RIGHT

    def x(value: Decimal) -> float:
        return LABEL + float(value / top) * PLOT

    summary = "; ".join(f"{bar.label}: {compact_usd(bar.low)} to {compact_usd(bar.high)}"
                        for bar in bars)
    parts = [
        f'<svg class="range-chart" id="{escape(chart_id)}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="{escape(chart_id)}-t {escape(chart_id)}-d" '
        f'preserveAspectRatio="xMinYMin meet">',
        f'<title id="{escape(chart_id)}-t">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-d">Pledged USD, low to high. {escape(summary)}</desc>',
        f'<text class="axis" x="{LABEL}" y="14">$0</text>',
        f'<text class="axis" x="{LABEL + PLOT}" y="14" text-anchor="end">'
        f'{escape(compact_usd(top))}</text>',
        f'<line class="baseline" x1="{LABEL}" y1="{TOP - 4}" x2="{LABEL}" y2="{height - 4}"/>',
    ]
    for index, bar in enumerate(bars):
        y = TOP + index * ROW
        left, right = x(bar.low), x(bar.high)
        span = max(right - left, 2.0)  # a point range still shows as a sliver
        parts += [
            '<g class="bar">',
            f'<title>{escape(bar.label)}: {escape(compact_usd(bar.low))} to '
            f'{escape(compact_usd(bar.high))}</title>',
            f'<text class="label" x="{LABEL - 8}" y="{y + 15}" text-anchor="end">'
            f'{escape(_short(bar.label))}</text>',
            f'<rect class="range" x="{left:.1f}" y="{y + 4}" width="{span:.1f}" height="14" '
            f'rx="2"/>',
            f'<line class="end" x1="{left:.1f}" y1="{y + 1}" x2="{left:.1f}" y2="{y + 21}"/>',
            f'<line class="end" x1="{left + span:.1f}" y1="{y + 1}" x2="{left + span:.1f}" '
            f'y2="{y + 21}"/>',
            '</g>',
        ]
    parts.append("</svg>")
    return Markup("".join(parts))


def _short(label: str, most: int = 26) -> str:
    return label if len(label) <= most else label[: most - 1] + "…"


BAND_WIDTH = 560
BAND_HEIGHT = 120
BAND_LEFT = 70
BAND_BOTTOM = 22


@dataclass(frozen=True)
class RangePoint:
    """The cumulative low–high range at the end of one bucket."""

    label: str  # the bucket's last day
    low: Decimal
    high: Decimal


def band_chart(chart_id: str, title: str, points: list[RangePoint]) -> Markup:
    """An accessible SVG of a cumulative range over time: the band between low and high,
    both edges drawn (never a midpoint), on one dollar scale from 0."""
    if not points:
        return Markup('<p class="empty">No pledges in this window.</p>')
    top = max(point.high for point in points) or Decimal(1)
    plot_height = BAND_HEIGHT - BAND_BOTTOM - 8
    step = (BAND_WIDTH - BAND_LEFT - RIGHT) / max(len(points) - 1, 1)

    def xy(index: int, value: Decimal) -> str:
        return f"{BAND_LEFT + index * step:.1f},{8 + plot_height * (1 - float(value / top)):.1f}"

    highs = [xy(i, p.high) for i, p in enumerate(points)]
    lows = [xy(i, p.low) for i, p in enumerate(points)]
    last = points[-1]
    summary = (f"From {points[0].label} to {last.label}; at the end "
               f"{compact_usd(last.low)} to {compact_usd(last.high)}")
    cid = escape(chart_id)
    parts = [
        f'<svg class="band-chart" id="{cid}" viewBox="0 0 {BAND_WIDTH} {BAND_HEIGHT}" '
        f'role="img" aria-labelledby="{cid}-t {cid}-d" preserveAspectRatio="xMinYMin meet">',
        f'<title id="{cid}-t">{escape(title)}</title>',
        f'<desc id="{cid}-d">Cumulative pledged USD, low to high. {escape(summary)}</desc>',
        f'<text class="axis" x="{BAND_LEFT - 6}" y="14" text-anchor="end">'
        f'{escape(compact_usd(top))}</text>',
        f'<text class="axis" x="{BAND_LEFT - 6}" y="{8 + plot_height}" text-anchor="end">$0</text>',
        f'<text class="axis" x="{BAND_LEFT}" y="{BAND_HEIGHT - 4}">'
        f'{escape(points[0].label)}</text>',
        f'<text class="axis" x="{BAND_WIDTH - RIGHT}" y="{BAND_HEIGHT - 4}" text-anchor="end">'
        f'{escape(last.label)}</text>',
        f'<polygon class="range" points="{" ".join(highs + lows[::-1])}"/>',
        f'<polyline class="end" fill="none" points="{" ".join(highs)}"/>',
        f'<polyline class="end" fill="none" points="{" ".join(lows)}"/>',
        "</svg>",
    ]
    return Markup("".join(parts))
