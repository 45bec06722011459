"""The registry's one command: record what a partner says happened.

The partner's submission (a contract model) is the command's body; the principal and the
firms it may act for come from the API key, never from the body. In-process callers (the
demo loader, tests, benchmarks) are trusted and act for every firm.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from uuid import UUID

from contracts.submissions_v1 import (
    DealCancelledSubmission,
    DealProposedSubmission,
    FacilityAnnouncedSubmission,
    FirmRegisteredSubmission,
    JointVentureFormedSubmission,
    MeetingHeldSubmission,
    PledgeMadeSubmission,
    PledgeRevisedSubmission,
    PledgeWithdrawnSubmission,
    TechTransferSignedSubmission,
)
from services.registry.application.authority import EVERY_FIRM, Authority
from services.registry.domain.identities import receipt_id

AnySubmission = (
    FirmRegisteredSubmission
    | MeetingHeldSubmission
    | DealProposedSubmission
    | PledgeMadeSubmission
    | PledgeRevisedSubmission
    | PledgeWithdrawnSubmission
    | TechTransferSignedSubmission
    | JointVentureFormedSubmission
    | FacilityAnnouncedSubmission
    | DealCancelledSubmission
)


@dataclass(frozen=True)
class RecordPartnerEvent:
    principal: str
    submission: AnySubmission
    authority: Authority = EVERY_FIRM

    @cached_property
    def receipt_id(self) -> UUID:
        """The id of the receipt this event gets: one per principal and partner event id.
        Asked several times per decision, and a version-5 UUID costs a hash each time."""
        return receipt_id(self.principal, self.submission.event_id)
