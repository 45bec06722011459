"""The submission contract and the domain agree on closed values, and a retry's fingerprint
depends on its meaning only."""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any

import pytest
from pydantic import TypeAdapter

from contracts import submissions_v1 as contract
from services.registry.application.idempotency import earlier_fingerprints, fingerprint
from services.registry.domain import values as domain

SUBMISSION: TypeAdapter[Any] = TypeAdapter(contract.Submission)


@pytest.mark.parametrize(("ours", "theirs"), [
    (contract.Sector, domain.Sector), (contract.DealFormat, domain.DealFormat),
    (contract.FirmKind, domain.FirmKind),
])
def test_contract_enums_are_the_domain_enums(ours: type[StrEnum], theirs: type[StrEnum]) -> None:
    assert [m.value for m in ours] == [m.value for m in theirs]


def test_firm_code_pattern_is_the_domain_rule() -> None:
    assert contract.CODE_PATTERN == domain.FIRM_CODE_PATTERN.pattern


def pledge(occurred_at: str, low: str, deal_id: str = "6f1c1a7e-4c1b-4e1a-9b7e-2d3c4b5a6f70"
           ) -> Any:
    return SUBMISSION.validate_python({
        "event_id": "p-1", "type": "pledge_made", "occurred_at": occurred_at,
        "payload": {"deal_id": deal_id, "firm": "tata-motors",
                    "amount": {"low": low, "high": "40000000", "currency": "USD"}},
    })


def test_the_same_meaning_has_one_fingerprint() -> None:
    first = pledge("2025-05-20T10:00:00+05:30", "10000000")
    assert fingerprint(first) == fingerprint(pledge("2025-05-20T04:30:00.000000Z", "10000000.0"))
    assert fingerprint(first) == fingerprint(
        pledge("2025-05-20T10:00:00.000+05:30", "10000000.000000",
               "6F1C1A7E-4C1B-4E1A-9B7E-2D3C4B5A6F70"))


def test_another_meaning_has_another_fingerprint() -> None:
    first = fingerprint(pledge("2025-05-20T10:00:00+05:30", "10000000"))
    assert first != fingerprint(pledge("2025-05-20T10:00:00+05:00", "10000000"))
    assert first != fingerprint(pledge("2025-05-20T10:00:00+05:30", "10000001"))
    assert first != fingerprint(pledge("2025-05-20T10:00:00.000001+05:30", "10000000"))


def test_earlier_versions_fingerprint_is_still_recognised() -> None:
    submission = pledge("2025-05-20T10:00:00+05:30", "10000000")
    # What the registry computed before canonical forms: the fields as JSON, as given.
    before = hashlib.sha256(json.dumps(submission.model_dump(mode="json"), sort_keys=True,
                                       separators=(",", ":")).encode()).hexdigest()
    assert before in earlier_fingerprints(submission)
