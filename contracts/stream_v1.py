"""Version 1 of the stamp the relay puts on every record it publishes (events, untranslatable
events, watermarks), in two headers: `epoch` and `seq`.

`seq` counts the relay's records in one partition: 0, 1, 2, ... A record's seq is at most
one above the highest seq a consumer has read in that partition, because the relay numbers
its records before sending them, records only what the broker acknowledged, and re-sends
after a failure from the last acknowledged number (so a seq may repeat, never jump). A seq
that jumps proves records are missing: the topic lost them (a broker that restarted empty,
a topic deleted and recreated) or the reader started in the wrong place.

`epoch` counts the topics the relay has written. When the relay finds the topic younger
than its records say (the broker acknowledged an offset at or below one it acknowledged
before), it starts a new epoch: seq starts again at 0 in every partition and the whole log
is published again. A consumer that meets a higher epoch reads its partition again from the
start, skipping records of lower epochs: everything they held is in the new epoch too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

EPOCH_HEADER = "epoch"
SEQ_HEADER = "seq"
FIRST_EPOCH = 1


@dataclass(frozen=True, order=True)
class StreamStamp:
    """Where a relay record stands: in which epoch, at which seq of its partition. Stamps
    order by epoch, then seq."""

    epoch: int
    seq: int

    def headers(self) -> list[tuple[str, bytes]]:
        return [(EPOCH_HEADER, str(self.epoch).encode()), (SEQ_HEADER, str(self.seq).encode())]

    @classmethod
    def of_headers(cls, headers: Iterable[tuple[str, bytes | None]] | None) -> StreamStamp | None:
        """The stamp in these headers; None when there is none, or it is not two integers
        (the record is then not taken as the relay's)."""
        found = {key: value for key, value in headers or () if key in (EPOCH_HEADER, SEQ_HEADER)}
        try:
            epoch = int(found[EPOCH_HEADER] or b"")
            seq = int(found[SEQ_HEADER] or b"")
        except (KeyError, ValueError):
            return None
        return cls(epoch, seq) if epoch >= FIRST_EPOCH and seq >= 0 else None
