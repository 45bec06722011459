"""Version 1 of the record the relay publishes for a stored event it cannot translate into its
envelope (`events_v1`), in that event's place: keyed by the aggregate id like the event
itself, with the header `untranslatable: 1`.

The relay never stalls on such an event, and the aggregate's order on the topic is kept:
consumers park this record against its aggregate, and the aggregate's later events wait
behind it until it is retried (re-read from the log) after a fix.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

UNTRANSLATABLE_HEADER = "untranslatable"


class UntranslatableEvent(BaseModel):
    """What is known of a stored event that has no envelope: where it is, whose it is."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["untranslatable_event"] = "untranslatable_event"
    position: int = Field(ge=1, description="Position of the stored event in the registry's log")
    aggregate_id: UUID
    aggregate_version: int = Field(ge=1)
    stored_type: str = Field(description="The stored event's topic (its class in the registry)")
    reason: str = Field(description="Why it could not be translated")
