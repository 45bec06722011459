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
