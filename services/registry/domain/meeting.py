"""A meeting between firms, often closed-door and attended by government officials."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from services.registry.domain.errors import InvalidValue
from services.registry.domain.recorded import (
    GENESIS_HASH,
    Provenance,
    RecordedAggregate,
    RecordedEvent,
)
from services.registry.domain.values import Sector, parse_enum, require_text

MAX_ATTENDEES = 500


class Meeting(RecordedAggregate):
    TOPIC = "dealregistry:Meeting"

    class Created(RecordedAggregate.Created):
        """Unused; eventsourcing requires every inherited event class to carry a topic."""

        TOPIC = "dealregistry:Meeting.Created"

    class Held(RecordedAggregate.Created, RecordedEvent):
        TOPIC = "dealregistry:MeetingHeld.v1"
        title: str
        location: str
        closed_door: bool
        attendees: list[str]
        government_bodies: list[str]
        sectors: list[str]
        summary: str

        def evolve(self, aggregate: Any) -> None:
            aggregate.title = self.title
            aggregate.location = self.location
            aggregate.closed_door = self.closed_door
            aggregate.attendees = list(self.attendees)
            aggregate.government_bodies = list(self.government_bodies)
            aggregate.sectors = list(self.sectors)
            aggregate.summary = self.summary

    def __init__(self, **_: Any) -> None:
        pass

    @classmethod
    def hold(
        cls,
        meeting_id: UUID,
        title: str,
        location: str,
        closed_door: bool,
        attendees: list[str],
        government_bodies: list[str],
        sectors: list[str],
        summary: str,
        provenance: Provenance,
    ) -> Meeting:
        """Attendees are firm codes the caller has checked are registered."""
        if not attendees:
            raise InvalidValue("attendees", "min_items", "a meeting needs at least one attendee")
        if len(attendees) > MAX_ATTENDEES:
            raise InvalidValue("attendees", "max_items", f"at most {MAX_ATTENDEES} attendees")
        if len(set(attendees)) != len(attendees):
            raise InvalidValue("attendees", "unique", "attendees must not repeat")
        return cls._create(
            cls.Held,
            id=meeting_id,
            title=require_text(title, "title"),
            location=require_text(location, "location"),
            closed_door=closed_door,
            attendees=list(attendees),
            government_bodies=[
                require_text(body, "government_bodies") for body in government_bodies
            ],
            sectors=[parse_enum(Sector, s, "sectors").value for s in sectors],
            summary=summary.strip()[:2000],
            previous_hash=GENESIS_HASH,
            **provenance.as_event_fields(),
        )
