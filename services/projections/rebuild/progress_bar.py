"""Progress of a rebuild on stderr: a live bar on a terminal, a line every few seconds
otherwise (a log file or CI gets a readable trace, not thousands of carriage returns)."""

from __future__ import annotations

import time
from typing import Any, TextIO

from tqdm import tqdm

LINE_INTERVAL_SECONDS = 5.0


class RebuildProgress:
    """Events done out of a total that may grow while the live side moves on."""

    def __init__(self, stream: TextIO, unit: str = "events",
                 line_interval: float = LINE_INTERVAL_SECONDS) -> None:
        self.stream = stream
        self.unit = unit
        self.line_interval = line_interval
        self.done = 0
        self.total = 0
        self._started = time.monotonic()
        self._last_line = self._started
        self._bar: Any = None
        if stream.isatty():
            self._bar = tqdm(total=0, unit=f" {unit}", unit_scale=True, file=stream,
                             dynamic_ncols=True, desc="rebuild")

    def set_total(self, total: int) -> None:
        self.total = max(total, self.done)
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def advance(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        if now - self._last_line >= self.line_interval:
            self._last_line = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float) -> str:
        rate = self.done / max(now - self._started, 1e-9)
        left = max(self.total - self.done, 0)
        remaining = f"{left / rate:.0f} s remaining" if rate > 0 else "remaining unknown"
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        return (f"rebuild: {self.done:,}/{self.total:,} {self.unit}{share}, "
                f"{rate:,.0f} {self.unit}/s, {remaining}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
