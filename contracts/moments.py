"""The dates and times the registry takes, as patterns that clients, SDKs and fuzzers can
read: a calendar date from 1900-01-01 to 2199-12-31, a time to the microsecond, a UTC offset.

The range is of the date as written. An offset moves it by less than a day, so every instant
written this way lies between 1899-12-30 and 2200-01-01 in UTC, which Python and every
read-model backend hold: nothing taken can overflow when converted to UTC downstream.
"""

from __future__ import annotations

_YEAR = r"(19[0-9]{2}|2[01][0-9]{2})"
_MONTH_DAY = (r"((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"  # every month has these days
              r"|(0[13-9]|1[0-2])-(29|30)"
              r"|(0[13578]|1[02])-31)")
# 29 February of the leap years: divisible by 4, and 1900 and 2100 are not (2000 is).
_LEAP_DAY = r"((19|20|21)(0[48]|[2468][048]|[13579][26])|2000)-02-29"
DATE = rf"({_YEAR}-{_MONTH_DAY}|{_LEAP_DAY})"
TIME = r"T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
OFFSET = r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"

# When something happened: RFC 3339's date-time (seconds and offset required) in the range.
_TIME_WITH_SECONDS = r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
DATETIME_WITH_OFFSET_PATTERN = rf"^{DATE}{_TIME_WITH_SECONDS}{OFFSET}$"
EARLIEST_DATE = "1900-01-01"
LATEST_DATE = "2199-12-31"
