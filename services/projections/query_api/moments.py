"""The dates and times a read takes in its query (`as_of`, `recorded_as_of`, `from`, `to`), and
the instant each means.

The accepted text is exactly what the published patterns match (contracts.moments, the range
an event's time may have): a calendar date, optionally with a time to the microsecond and a
UTC offset. A pattern, unlike prose, lets clients and fuzzers know in advance what is
refused.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from contracts.moments import DATE, OFFSET, TIME
from services.shared.errors import ApiError

MOMENT_PATTERN = rf"^{DATE}({TIME}{OFFSET}?)?$"
# A log position (18 digits at most, so always within BIGINT), or a moment.
POSITION_OR_MOMENT_PATTERN = rf"^([0-9]{{1,18}}|{DATE}({TIME}{OFFSET}?)?)$"
MAX_MOMENT_LENGTH = 40


def moment(text: str, field: str, day_starts: bool = False) -> datetime:
    """The instant of a text that matches MOMENT_PATTERN: a date means the end of that day
    in UTC (its start if `day_starts`), a datetime without offset is UTC."""
    try:
        if "T" not in text:
            day = date.fromisoformat(text)
            return datetime.combine(day, time.min if day_starts else time.max, tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:  # the route's pattern refuses these first; kept for direct callers
        raise ApiError(422, "invalid_request",
                       f"{field}: expected a date or an ISO 8601 datetime, got {text!r}",
                       field=field, rule="past_bound") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
