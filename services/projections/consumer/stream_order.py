"""Whether a relay record follows what a partition has delivered so far, by its stamp
(`contracts.stream_v1`).

The rules, for the stamp of the last record taken in a partition (None before any):

- the same epoch, a seq at most one above: the next record, or one sent again: take it;
- the same epoch, a seq further on: records before it are missing (the topic lost them, or
  the reader started in the wrong place): skip it, and everything after it of that epoch,
  until the relay's next epoch brings the log again;
- an older epoch: a record from before the topic was found lost; everything it held is in
  the newer epoch: skip it;
- a newer epoch at seq 0: the start of the log published again: take it;
- a newer epoch further on: its start lies behind the reader: read the partition again from
  its beginning, skipping the older epochs' records.
"""

from __future__ import annotations

from enum import Enum

from contracts.stream_v1 import StreamStamp


class Verdict(Enum):
    TAKE = "take"
    GAP = "gap"
    STALE = "stale"
    REWIND = "rewind"


def judge(last: StreamStamp | None, stamp: StreamStamp) -> Verdict:
    if last is None:
        return Verdict.TAKE if stamp.seq == 0 else Verdict.GAP
    if stamp.epoch < last.epoch:
        return Verdict.STALE
    if stamp.epoch > last.epoch:
        return Verdict.TAKE if stamp.seq == 0 else Verdict.REWIND
    return Verdict.TAKE if stamp.seq <= last.seq + 1 else Verdict.GAP


def after_taking(last: StreamStamp | None, stamp: StreamStamp) -> StreamStamp:
    """The last stamp once `stamp` is taken: a record sent again does not move it back."""
    if last is None or stamp.epoch > last.epoch:
        return stamp
    return max(last, stamp)


def start_of(epoch: int) -> StreamStamp:
    """What a partition read again for `epoch` expects: its seq 0 next."""
    return StreamStamp(epoch, -1)
