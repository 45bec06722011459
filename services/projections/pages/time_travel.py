"""The time-travel control of every page: now, a business date (`as_of`), or what the
registry knew at a recorded time or log position (`recorded_as_of`).

The parameters are the read API's own (see query_api.routes.past_clock) and mean the same;
a value the API would refuse is shown as a message here, and the page shows the present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from services.projections.query_api.moments import (
    MAX_MOMENT_LENGTH,
    MOMENT_PATTERN,
    POSITION_OR_MOMENT_PATTERN,
    moment,
)
from services.projections.query_api.routes import PastClock
from services.projections.read_model.deal_history import PastBound
from services.projections.read_model.queries import ReadModelQueries
from services.shared.errors import ApiError

CLOCKS = ("as_of", "recorded_as_of")


@dataclass(frozen=True)
class TimeTravel:
    """The past a page was asked to show (None: the present), as the control shows it."""

    clock: str | None
    value: str
    past: PastClock | None
    position: int
    problem: str | None = None

    @property
    def bound(self) -> PastBound | None:
        """What the page's reads admit: None for the present."""
        return None if self.past is None else self.past.bound

    def query(self) -> str:
        """The query string that keeps this moment on the next page ('' for the present)."""
        if self.past is None or self.clock is None:
            return ""
        return urlencode({self.clock: self.value})

    def link(self, path: str, **params: Any) -> str:
        """`path` with `params` (None values left out) and this moment."""
        wanted = {k: v for k, v in params.items() if v not in (None, "")}
        if self.past is not None and self.clock is not None:
            wanted[self.clock] = self.value
        return f"{path}?{urlencode(wanted)}" if wanted else path

    def stated(self) -> str:
        if self.past is None:
            return "now"
        stated = self.past.stated
        if stated["clock"] == "business":
            return f"as of business time {stated['as_of']}"
        return f"as the registry knew it at log position {self.past.bound.position}"


def time_travel(queries: ReadModelQueries, params: dict[str, str]) -> TimeTravel:
    """The moment asked for by the page's query parameters (`as_of` or `recorded_as_of`,
    or the control's `clock` and `moment`), resolved as the API resolves them."""
    position = queries.position()
    if params.get("clock") in CLOCKS:  # the control's own form: a clock and its moment
        params = {params["clock"]: params.get("moment", "")}
    given = {name: params.get(name, "").strip() for name in CLOCKS}
    asked = [(name, value) for name, value in given.items() if value]
    if not asked:
        return TimeTravel(None, "", None, position)
    clock, value = asked[0]
    if len(asked) > 1:
        return TimeTravel(clock, value, None, position, "give one of as_of or recorded_as_of")
    pattern = MOMENT_PATTERN if clock == "as_of" else POSITION_OR_MOMENT_PATTERN
    if len(value) > MAX_MOMENT_LENGTH or not re.fullmatch(pattern, value):
        return TimeTravel(clock, value, None, position,
                          f"{clock}: expected a date such as 2025-08-31, a datetime such as "
                          f"2025-08-31T18:00:00+05:30"
                          + (", or a log position" if clock == "recorded_as_of" else ""))
    try:
        if clock == "as_of":
            until = moment(value, clock)
            return TimeTravel(clock, value, PastClock(
                PastBound(position, until), {"clock": "business", "as_of": until.isoformat()}),
                position)
        if value.isdigit():
            wanted = int(value)
            if wanted > position:
                return TimeTravel(clock, value, None, position,
                                  f"the read model is at position {position}, not yet at "
                                  f"{wanted}")
            return TimeTravel(clock, value, PastClock(
                PastBound(wanted), {"clock": "recorded", "recorded_as_of": wanted}), wanted)
        by = moment(value, clock)
        resolved = queries.position_recorded_by(by, position)
        return TimeTravel(clock, value, PastClock(
            PastBound(resolved), {"clock": "recorded", "recorded_as_of": by.isoformat()}),
            resolved)
    except ApiError as refused:
        return TimeTravel(clock, value, None, position, refused.message)
