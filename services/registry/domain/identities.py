"""Deterministic aggregate ids, so a retried request always addresses the same aggregate."""

from __future__ import annotations

from functools import lru_cache
from uuid import UUID, uuid5

REGISTRY_NAMESPACE = UUID("5d7c1f0e-3b7a-4c55-9a59-4f1f7d3c2a10")


# A decision asks for the same ids more than once (to look its targets up in one query, then
# to decide; every firm a pledge or a deal names), and each is a SHA-1 and a UUID object.
@lru_cache(maxsize=8192)
def firm_id(code: str) -> UUID:
    return uuid5(REGISTRY_NAMESPACE, f"firm:{code}")


@lru_cache(maxsize=8192)
def derived_id(kind: str, principal: str, partner_event_id: str) -> UUID:
    """Id of an aggregate created by a partner event that did not name one itself."""
    return uuid5(REGISTRY_NAMESPACE, f"{kind}:{principal}:{partner_event_id}")


def receipt_id(principal: str, partner_event_id: str) -> UUID:
    return derived_id("receipt", principal, partner_event_id)
