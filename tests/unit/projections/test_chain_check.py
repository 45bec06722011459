"""The read side's check of one aggregate's hash chain."""

from __future__ import annotations

from contracts.events_v1 import FIRST_PREVIOUS_HASH
from services.projections.read_model.chain_check import check_chain
from services.registry.domain.recorded import GENESIS_HASH


def chain(length: int) -> list[dict]:
    events, previous = [], FIRST_PREVIOUS_HASH
    for version in range(1, length + 1):
        digest = f"{version:064x}"
        events.append({"position": 10 * version, "aggregate_version": version,
                       "hash": digest, "previous_hash": previous})
        previous = digest
    return events


def test_the_contract_names_the_domain_chain_start() -> None:
    assert FIRST_PREVIOUS_HASH == GENESIS_HASH


def test_a_whole_chain_verifies_from_the_copy_and_against_the_log() -> None:
    events = chain(4)
    assert check_chain(events).ok and not check_chain(events).recomputed
    recomputed = {e["position"]: e["hash"] for e in events}
    assert check_chain(events, recomputed).ok and check_chain(events, recomputed).recomputed


def test_a_gap_a_wrong_link_a_missing_or_altered_event_is_named() -> None:
    events = chain(4)
    assert "expected version 3" in str(check_chain(events[:2] + events[3:]).first_problem)
    relinked = [dict(e) for e in events]
    relinked[2]["previous_hash"] = "f" * 64
    assert "version 3 (position 30) does not name" in str(check_chain(relinked).first_problem)
    first = [dict(e) for e in events]
    first[0]["previous_hash"] = "1" * 64
    assert not check_chain(first).ok
    recomputed: dict[int, str | None] = {e["position"]: e["hash"] for e in events}
    recomputed[20] = None
    assert "missing from the log" in str(check_chain(events, recomputed).first_problem)
    recomputed[20] = "e" * 64
    assert "altered after recording" in str(check_chain(events, recomputed).first_problem)
