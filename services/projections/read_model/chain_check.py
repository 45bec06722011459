"""Whether one aggregate's recorded events still form their hash chain, as a read-side
reader can tell: versions run 1, 2, 3..., the first names FIRST_PREVIOUS_HASH, and each
later event names the hash of the one before.

From the read model alone this proves the copy is whole and in order. Where the registry's
log is at hand (the embedded app), the stored events' hashes are recomputed and passed in
`recomputed`: then an edit of a stored event after it was recorded shows too, as a
recomputed hash that differs from the one recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contracts.events_v1 import FIRST_PREVIOUS_HASH


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    events_checked: int
    recomputed: bool  # whether the stored events' hashes were recomputed from the log
    first_problem: str | None = None


def check_chain(events: Sequence[Mapping[str, Any]],
                recomputed: Mapping[int, str | None] | None = None) -> ChainCheck:
    """`events`: the aggregate's events in version order (position, aggregate_version, hash,
    previous_hash). `recomputed`: by position, the hash of the stored event now (None where
    the log no longer holds it)."""
    expected_previous = FIRST_PREVIOUS_HASH
    for expected_version, event in enumerate(events, start=1):
        where = f"version {event['aggregate_version']} (position {event['position']})"
        if event["aggregate_version"] != expected_version:
            return _failed(events, recomputed,
                           f"expected version {expected_version}, found {where}")
        if event["previous_hash"] != expected_previous:
            return _failed(events, recomputed,
                           f"{where} does not name the hash of the event before it")
        if recomputed is not None:
            stored = recomputed.get(event["position"])
            if stored is None:
                return _failed(events, recomputed, f"{where} is missing from the log")
            if stored != event["hash"]:
                return _failed(events, recomputed,
                               f"{where}: the stored event's hash is {stored}, not the "
                               f"{event['hash']} recorded: it was altered after recording")
        expected_previous = event["hash"]
    return ChainCheck(True, len(events), recomputed is not None)


def _failed(events: Sequence[Any], recomputed: Mapping[int, Any] | None, problem: str
            ) -> ChainCheck:
    return ChainCheck(False, len(events), recomputed is not None, problem)
