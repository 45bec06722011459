"""Errors the domain raises when a command breaks a rule.

Each names the field and the rule so the API can tell the partner exactly what was wrong.
"""

from __future__ import annotations


class DomainError(Exception):
    """A command was refused by a business rule."""

    code = "domain_error"

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule
        self.message = message


class InvalidValue(DomainError):
    """A value breaks a rule on its own (a negative amount, an unknown currency)."""

    code = "invalid_value"


class StateConflict(DomainError):
    """The command does not fit the aggregate's current state (a pledge on a cancelled deal)."""

    code = "state_conflict"


class UnknownReference(DomainError):
    """The command names something the registry has never recorded."""

    code = "unknown_reference"
