"""What makes two submissions the same event, for idempotent ingestion.

A retry is recognised by meaning, not by bytes. The canonical form of a submission is its
validated fields with `occurred_at` as the same instant in UTC (microseconds), every decimal
without trailing zeros (`"1.0"` is `"1"`), ids in their lowercase hyphenated form and enums by
value; keys sorted, no whitespace. Its SHA-256 is the fingerprint a receipt keeps.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from services.registry.domain.recorded import PLAIN_JSON_TYPES


def _canonical(value: Any) -> Any:
    if type(value) in PLAIN_JSON_TYPES:
        return value
    if isinstance(value, Enum):
        return _canonical(value.value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _digest(document: Any) -> str:
    body = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def fingerprint(submission: BaseModel) -> str:
    """SHA-256 of the submission's canonical form."""
    return _digest(_canonical(submission.model_dump()))


def earlier_fingerprints(submission: BaseModel) -> set[str]:
    """Fingerprints this submission had under earlier versions of the registry (its fields as
    JSON, offsets and trailing zeros kept), so that a retry across an upgrade still replays."""
    return {_digest(submission.model_dump(mode="json"))}
