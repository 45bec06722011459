"""The registry's one command: record what a partner says happened.

The partner's submission (a contract model) is the command's body; the principal and the
firms it may act for come from the API key, never from the body. In-process callers (the
demo loader, tests, benchmarks) are trusted and act for every firm.
"""

from __future__ import annotations

from dataclasses import dataclass

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
