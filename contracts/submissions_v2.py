"""Version 2 of what partner systems POST to the registry: a pledge's terms.

A v2 submission says `"schema_version": 2`. `pledge_made` and `pledge_revised` then state the
pledge's `instrument` (required) and optionally its `tranches`: due dates (RFC 3339 full-date,
1900-01-01 to 2199-12-31, strictly ascending) and amounts in the pledge's currency, at most
MAX_TRANCHES, adding up to no more than the pledge's high amount. A v2 revision states the
terms in full: the instrument, and the tranches (none if left out).

Every other type is the same in v1 and v2, so a partner may send `schema_version: 2` on
everything. A submission without `schema_version` (or with 1) is v1 (`submissions_v1`),
which keeps working unchanged: a v1 pledge states no instrument (recorded as not stated),
and a v1 revision keeps the instrument and tranches the pledge had. v1 pledge submissions
are deprecated: their answers carry `Deprecation: @<V1_PLEDGES_DEPRECATED_AT>` (RFC 9745).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    WithJsonSchema,
)
from pydantic_core import InitErrorDetails, ValidationError

from contracts import submissions_v1 as v1
from contracts.events_v2 import Instrument
from contracts.moments import DATE, EARLIEST_DATE, LATEST_DATE
from contracts.submissions_v1 import SCHEMA_VERSION_CHECK, Amount, Strict, dated_text

SCHEMA_VERSION: Literal[2] = 2
SCHEMA_VERSIONS = (1, 2)
MAX_TRANCHES = 120
# When v1 pledge submissions were deprecated (RFC 9745: the Deprecation header's date).
V1_PLEDGES_DEPRECATED_AT = datetime(2026, 12, 1, tzinfo=UTC)
DEPRECATED_IN_V1 = frozenset({"pledge_made", "pledge_revised"})

DATE_PATTERN = rf"^{DATE}$"
DueDate = Annotated[
    str,
    BeforeValidator(dated_text(DATE_PATTERN, "date_format", "full-date such as 2027-03-31")),
    WithJsonSchema({"type": "string", "format": "date", "pattern": DATE_PATTERN,
                    "maxLength": 10, "examples": ["2027-03-31"],
                    "description": f"RFC 3339 full-date, {EARLIEST_DATE} to {LATEST_DATE}"}),
]


class TrancheIn(Strict):
    due_date: DueDate = Field(description="When the tranche is due; each after the one before")
    amount: Amount = Field(description="In the pledge's currency; > 0")


class PledgeTermsIn(Strict):
    instrument: Instrument = Field(description="How the pledge is paid")
    tranches: list[TrancheIn] = Field(
        default=[], max_length=MAX_TRANCHES,
        description="The schedule: due dates strictly ascending, amounts adding up to at "
                    "most the high amount; none if left out",
    )


class PledgeMadeInV2(v1.PledgeMadeIn, PledgeTermsIn):
    pass


class PledgeRevisedInV2(v1.PledgeRevisedIn, PledgeTermsIn):
    """The new amount and the pledge's terms in full: the instrument, and the tranches
    (a revision that leaves them out leaves the pledge without a schedule)."""


Version2 = Annotated[Literal[2], SCHEMA_VERSION_CHECK]
VERSION_2 = Field(exclude=True, description="2: this version")


class FirmRegisteredSubmissionV2(v1.FirmRegisteredSubmission):
    schema_version: Version2 = VERSION_2  # type: ignore[assignment]


class MeetingHeldSubmissionV2(v1.MeetingHeldSubmission):
    schema_version: Version2 = VERSION_2  # type: ignore[assignment]


class DealProposedSubmissionV2(v1.DealProposedSubmission):
    schema_version: Version2 = VERSION_2  # type: ignore[assignment]


class PledgeMadeSubmissionV2(v1.PledgeMadeSubmission):
    schema_version: Version2 = VERSION_2  # type: ignore[assignment]
    payload: PledgeMadeInV2


class PledgeRevisedSubmissionV2(v1.PledgeRevisedSubmission):
    schema_version: Version2 = VERSION_2  # type: ignore[assignment]
    payload: PledgeRevisedInV2


class PledgeWithdrawnSubmissionV2(v1.PledgeWithdrawnSubmission):
    schema_version: Version2 = VERSION_2  # type: ignore[assignment]


class TechTransferSignedSubmissionV2(v1.TechTransferSignedSubmission):
    schema_version: Version2 = VERSION_2  # type: ignore[assignment]


class JointVentureFormedSubmissionV2(v1.JointVentureFormedSubmission):
    schema_version: Version2 = VERSION_2  # type: ignore[assignment]


class FacilityAnnouncedSubmissionV2(v1.FacilityAnnouncedSubmission):
    schema_version: Version2 = VERSION_2  # type: ignore[assignment]


class DealCancelledSubmissionV2(v1.DealCancelledSubmission):
    schema_version: Version2 = VERSION_2  # type: ignore[assignment]


Submission = Annotated[
    FirmRegisteredSubmissionV2
    | MeetingHeldSubmissionV2
    | DealProposedSubmissionV2
    | PledgeMadeSubmissionV2
    | PledgeRevisedSubmissionV2
    | PledgeWithdrawnSubmissionV2
    | TechTransferSignedSubmissionV2
    | JointVentureFormedSubmissionV2
    | FacilityAnnouncedSubmissionV2
    | DealCancelledSubmissionV2,
    Field(discriminator="type"),
]

V1_SUBMISSION: TypeAdapter[Any] = TypeAdapter(v1.Submission)
V2_SUBMISSION: TypeAdapter[Any] = TypeAdapter(Submission)


def _version_of(value: Any) -> Any:
    """The schema_version a submission names (1 when it names none), as the models compare
    it; a value that is none of SCHEMA_VERSIONS comes back as it is."""
    named = value.get("schema_version", 1) if isinstance(value, dict) \
        else getattr(value, "schema_version", 1)
    try:
        return v1.schema_version_number(named)
    except ValueError:  # a boolean
        return named


def _version_tag(value: Any) -> str | None:
    version = _version_of(value)
    return str(version) if type(version) is int and version in SCHEMA_VERSIONS else None


# Either version, as the OpenAPI document and contracts/schemas/v2/submission.json describe a
# request body: without schema_version (or 1) a v1 submission, with 2 a v2 one.
AnyVersionSubmission = Annotated[
    Annotated[v1.Submission, Tag("1")] | Annotated[Submission, Tag("2")],
    Discriminator(_version_tag, custom_error_type="schema_version",
                  custom_error_message="schema_version must be 1 or 2, or left out (1)"),
]
ANY_VERSION_SUBMISSION: TypeAdapter[Any] = TypeAdapter(AnyVersionSubmission)


def validate_submission(value: Any) -> BaseModel:
    """A partner's submission of either version, validated by its version's models (so
    errors name fields as each version's models do); raises pydantic.ValidationError."""
    version = _version_tag(value) if isinstance(value, dict) else "1"
    if version is None:
        raise ValidationError.from_exception_data("Submission", [InitErrorDetails(
            type="literal_error", loc=("schema_version",),
            input=value.get("schema_version"), ctx={"expected": "1 or 2, or left out (1)"})])
    return (V2_SUBMISSION if version == "2" else V1_SUBMISSION).validate_python(value)


def is_deprecated(submission: Any) -> bool:
    """Whether a submission (validated, or the JSON value of one, valid or not) is in a
    deprecated form: a v1 pledge or revision."""
    named = submission.get("type") if isinstance(submission, dict) \
        else getattr(submission, "type", None)
    return isinstance(named, str) and named in DEPRECATED_IN_V1 \
        and _version_tag(submission) == "1"


def deprecation_header() -> dict[str, str]:
    """The header that answers a deprecated submission (RFC 9745: `@` and Unix seconds)."""
    return {"Deprecation": f"@{int(V1_PLEDGES_DEPRECATED_AT.timestamp())}"}
