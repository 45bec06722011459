"""Version 1 of the watermark record the relay publishes to every partition of the topic,
with the header `watermark: 1`, once the broker acknowledged everything it published up to
a log position: "every event at or below `position` is on the topic".

Each event of the log that is at or below `position` was acknowledged (appended) before this
record was sent, so in each partition it sits at a lower offset than this record. A consumer
that has read a partition up to a watermark has therefore read every event of that partition
up to its `position`. Consumers never apply a watermark as an event; they take from it how
far the partition is complete, and how many partitions the topic has.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WATERMARK_HEADER = "watermark"


class Watermark(BaseModel):
    """Everything the relay published up to `position` is on the topic."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["watermark"] = "watermark"
    position: int = Field(ge=0, description="Log position up to which every event is published")
    partition: int = Field(ge=0, description="The partition this record was sent to")
    partitions: int = Field(ge=1, description="How many partitions the topic had when sent")
