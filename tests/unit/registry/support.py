"""Builders shared by the registry's write-side tests: provenance, domain objects, submissions."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from pydantic import TypeAdapter

from contracts.submissions_v1 import Receipt, Submission
from services.registry.application.commands import RecordPartnerEvent
from services.registry.application.handlers import RecordingService
from services.registry.domain.deal import Deal
from services.registry.domain.errors import DomainError
from services.registry.domain.recorded import GENESIS_HASH, Provenance, RecordedEvent
from services.registry.domain.values import AmountRange, UsdConversion

SUBMISSION = TypeAdapter(Submission)
OCCURRED_AT = "2025-08-29T10:30:00+09:00"
JP_FIRM = "toyota-tsusho"
IN_FIRM = "tata-motors"
THIRD_FIRM = "attero"
DEAL_ID = UUID("7a0c2e4e-1f1b-4a55-8d3e-0c6f0b1d2e3f")


def provenance(event_id: str = "evt-1", by: str = "partner-a") -> Provenance:
    return Provenance(
        occurred_at=datetime(2025, 8, 29, 1, 30, tzinfo=UTC),
        recorded_by=by,
        partner_event_id=event_id,
    )


def amount(low: str, high: str, currency: str = "USD") -> AmountRange:
    return AmountRange.of(Decimal(low), Decimal(high), currency)


def usd_of(value: AmountRange) -> UsdConversion:
    rates = {"USD": Decimal(1), "INR": Decimal(86), "JPY": Decimal(145)}
    return UsdConversion.of(value, rates[value.currency], "test rates")


def new_deal(
    format: str = "joint_venture",
    parties: Iterable[str] = (JP_FIRM, IN_FIRM),
    deal_id: UUID = DEAL_ID,
) -> Deal:
    return Deal.propose(
        deal_id, "Battery recycling venture", format, "recycling", list(parties),
        "A test deal", provenance("deal-1"),
    )


def pledge(
    deal: Deal, pledge_id: str = "pl-1", firm: str = IN_FIRM,
    low: str = "100", high: str = "200", currency: str = "USD",
) -> None:
    value = amount(low, high, currency)
    deal.make_pledge(pledge_id, firm, "IN", value, usd_of(value), provenance(f"pledge-{pledge_id}"))


def assert_refused(
    aggregate: Any,
    command: Callable[[], object],
    error: type[DomainError],
    field: str,
    rule: str,
) -> DomainError:
    """The command raises `error` naming `field` and `rule`, and leaves no event behind."""
    version = aggregate.version
    pending = len(aggregate.pending_events)
    last_hash = aggregate.last_hash
    with pytest.raises(error) as caught:
        command()
    assert type(caught.value) is error
    assert (caught.value.field, caught.value.rule) == (field, rule)
    assert caught.value.message
    assert aggregate.version == version
    assert len(aggregate.pending_events) == pending
    assert aggregate.last_hash == last_hash
    return caught.value


def chain_is_intact(events: list[RecordedEvent]) -> bool:
    previous = GENESIS_HASH
    for event in events:
        if event.previous_hash != previous:
            return False
        previous = event.hash()
    return True


# Submissions as partners send them.


def body(event_id: str, type_: str, payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": type_, "occurred_at": OCCURRED_AT,
            "payload": payload, **extra}


def firm_body(code: str, country: str = "JP", kind: str = "trading_house") -> dict[str, Any]:
    return body(f"firm-{code}", "firm_registered",
                {"code": code, "name": code.replace("-", " ").title(), "country": country,
                 "kind": kind})


def deal_body(
    event_id: str = "deal-1", deal_id: UUID = DEAL_ID, format: str = "joint_venture",
    parties: Iterable[str] = (JP_FIRM, IN_FIRM), **extra: Any,
) -> dict[str, Any]:
    return body(event_id, "deal_proposed",
                {"deal_id": str(deal_id), "title": "Battery recycling venture", "format": format,
                 "sector": "recycling", "parties": list(parties)}, **extra)


def pledge_body(
    event_id: str, pledge_id: str | None = None, firm: str = IN_FIRM,
    low: str = "100000000", high: str = "400000000", currency: str = "USD",
    rate: dict[str, str] | None = None, deal_id: UUID = DEAL_ID, **extra: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "deal_id": str(deal_id), "firm": firm,
        "amount": {"low": low, "high": high, "currency": currency},
    }
    if pledge_id is not None:
        payload["pledge_id"] = pledge_id
    if rate is not None:
        payload["rate"] = rate
    return body(event_id, "pledge_made", payload, **extra)


def record(service: RecordingService, body_: dict[str, Any], by: str = "partner-a") -> Receipt:
    return service.record(RecordPartnerEvent(by, SUBMISSION.validate_python(body_)))


def record_firms_and_deal(service: RecordingService, by: str = "partner-a") -> list[Receipt]:
    receipts = [
        record(service, firm_body(JP_FIRM, "JP", "trading_house"), by),
        record(service, firm_body(IN_FIRM, "IN", "automaker"), by),
        record(service, firm_body(THIRD_FIRM, "IN", "recycler"), by),
    ]
    receipts.append(
        record(service, deal_body(parties=(JP_FIRM, IN_FIRM, THIRD_FIRM)), by)
    )
    return receipts
