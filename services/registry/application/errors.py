"""Refusals that come from the store rather than from a business rule."""

from __future__ import annotations


class VersionConflict(Exception):
    """The partner's expected version is stale, or contention outlasted our retries."""

    def __init__(self, aggregate_id: str, expected: int | None, actual: int) -> None:
        super().__init__(
            f"aggregate {aggregate_id} is at version {actual}, the request expected {expected}"
        )
        self.aggregate_id = aggregate_id
        self.expected = expected
        self.actual = actual


class IdempotencyConflict(Exception):
    """The partner's event id was already used for a different body."""

    def __init__(self, event_id: str) -> None:
        super().__init__(
            f"event_id {event_id!r} was already recorded with a different body; "
            "use a new event_id for a new event"
        )
        self.event_id = event_id


class AlreadyExists(Exception):
    """A creation event names an aggregate that exists already."""

    def __init__(self, field: str, what: str) -> None:
        super().__init__(f"{what} already exists")
        self.field = field


class NotFound(Exception):
    """A change names an aggregate that was never created."""

    def __init__(self, field: str, what: str) -> None:
        super().__init__(f"{what} does not exist")
        self.field = field


class NotAuthorized(Exception):
    """The key does not speak for the firm(s) the event needs (services.registry.application
    .authority): nothing is recorded."""

    def __init__(
        self, field: str, rule: str, message: str, firms: list[str], acts_for: list[str]
    ) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule
        self.message = message
        self.firms = firms
        self.acts_for = acts_for
