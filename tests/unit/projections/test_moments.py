"""The query's dates and times: the published pattern admits exactly what `moment` reads."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.moments import EARLIEST_DATE, LATEST_DATE
from services.projections.query_api.moments import (
    MOMENT_PATTERN,
    POSITION_OR_MOMENT_PATTERN,
    moment,
)
from services.shared.errors import ApiError

FIRST_DAY, LAST_DAY = date.fromisoformat(EARLIEST_DATE), date.fromisoformat(LATEST_DATE)
offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


@given(st.from_regex(MOMENT_PATTERN, fullmatch=True))
def test_every_text_the_pattern_admits_is_an_instant(text: str) -> None:
    assert moment(text, "as_of").tzinfo is UTC


@given(st.dates(FIRST_DAY, LAST_DAY))
def test_every_day_an_event_may_have_is_admitted(day: date) -> None:
    assert re.fullmatch(MOMENT_PATTERN, day.isoformat())
    assert moment(day.isoformat(), "as_of") == datetime.combine(day, datetime.max.time(), UTC)


@given(st.datetimes(datetime(1900, 1, 1), datetime(2199, 12, 31, 23, 59, 59, 999999)),
       offsets)
def test_every_datetime_in_the_range_is_admitted_with_any_offset(
        at: datetime, offset: timezone) -> None:
    text = at.replace(tzinfo=offset).isoformat()
    assert re.fullmatch(MOMENT_PATTERN, text), text
    assert moment(text, "as_of") == at.replace(tzinfo=offset)


@pytest.mark.parametrize("text", [
    "0000-01-01", "1899-12-31", "2200-01-01", "10000-01-01", "2025-02-29", "1900-02-29",
    "2100-02-29", "2025-04-31", "2025-13-01", "2025-06-30T24:00", "2025-06-30T10:00+99:00",
    "2025-06-30T10:00+24:00", "2025-06-30T10:00:00.1234567", "2025-06-30 10:00", "20250630",
    "٢٠٢٥-٠٦-٣٠", "2025-06-30T10:00:00\x00", "yesterday", "",
])
def test_what_the_pattern_refuses(text: str) -> None:
    assert not re.fullmatch(MOMENT_PATTERN, text)


def test_leap_days_are_those_of_leap_years() -> None:
    leap = {year for year in range(1900, 2200)
            if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)}
    assert {year for year in range(1900, 2200)
            if re.fullmatch(MOMENT_PATTERN, f"{year}-02-29")} == leap


def test_a_recorded_position_has_at_most_18_digits() -> None:
    # 18 digits always fit in BIGINT (2^63-1 has 19), so no position can overflow a backend.
    assert re.fullmatch(POSITION_OR_MOMENT_PATTERN, "9" * 18)
    assert not re.fullmatch(POSITION_OR_MOMENT_PATTERN, "9" * 19)
    assert not re.fullmatch(POSITION_OR_MOMENT_PATTERN, "٣")  # digits, but not ASCII ones
    assert int("9" * 18) < 2**63 - 1


def test_a_text_it_cannot_read_is_a_422_naming_the_field() -> None:
    with pytest.raises(ApiError) as refused:
        moment("2025-02-30", "from")
    assert (refused.value.status, refused.value.field, refused.value.rule) == \
        (422, "from", "past_bound")
