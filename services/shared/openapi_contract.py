"""Bounds every service's query parameters and answers share, so that no number a client
sends can overflow a backend, and generated SDKs get the same integer types everywhere."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import Field

# The widest integer every backend stores (PostgreSQL BIGINT, SQLite INTEGER): log positions.
MAX_POSITION = 2**63 - 1
# No list is that long, and the bound keeps `offset` a 32-bit integer in generated SDKs.
MAX_OFFSET = 1_000_000_000

INT64 = {"format": "int64"}

LogPosition = Annotated[int, Field(ge=0, le=MAX_POSITION, json_schema_extra=INT64)]
# How many of something the log holds: events, pledges, items of a list.
Count = Annotated[int, Field(ge=0, le=MAX_POSITION, json_schema_extra=INT64)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip")]
