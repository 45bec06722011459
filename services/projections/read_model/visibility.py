"""Who may see what of a recorded fact: the one home of the read side's confidentiality rules,
applied by every answer that shows a meeting or an event's provenance (the read API, its
past-state reads, the event stream, the pages).

- A closed-door meeting: everyone sees that it took place, when, where and on which sectors;
  its title, attendees, government bodies and summary are for auditors, admins and the
  partners of an attending firm.
- An event's provenance (the partner's event id and the key that recorded it): for
  auditors, admins and the principal that recorded it.

A withheld field is answered as null and named in the answer's `withheld` list, so a client
can tell "withheld" from "empty".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CLOSED_DOOR_DETAILS = ("title", "attendees", "government_bodies", "summary")
PROVENANCE = ("event_id", "recorded_by")


@dataclass(frozen=True)
class Viewer:
    """Who is reading: a principal's name, whether its role sees everything (auditors,
    admins), and the firms it speaks for (partner keys)."""

    name: str
    sees_everything: bool
    firms: frozenset[str] = field(default_factory=frozenset)


def meeting_for(viewer: Viewer, meeting: Mapping[str, Any]) -> dict[str, Any]:
    """`meeting` (a meeting view) as `viewer` may see it."""
    shown = dict(meeting)
    if not meeting["closed_door"] or viewer.sees_everything \
            or viewer.firms & set(meeting["attendees"] or ()):
        shown["withheld"] = []
        return shown
    shown.update(dict.fromkeys(CLOSED_DOOR_DETAILS))
    shown["withheld"] = list(CLOSED_DOOR_DETAILS)
    return shown


def event_for(viewer: Viewer, event: Mapping[str, Any]) -> dict[str, Any]:
    """`event` (a deal event or a recorded-event summary) as `viewer` may see it."""
    shown = dict(event)
    if viewer.sees_everything or event["recorded_by"] == viewer.name:
        shown["withheld"] = []
        return shown
    shown.update(dict.fromkeys(PROVENANCE))
    shown["withheld"] = list(PROVENANCE)
    return shown
