"""The reader behind a request, as the confidentiality rules (read_model/visibility) see it."""

from __future__ import annotations

from services.projections.read_model.visibility import Viewer
from services.shared.api_keys import CAN_AUDIT, Principal


def viewer_of(principal: Principal) -> Viewer:
    return Viewer(principal.name, principal.role in CAN_AUDIT, principal.firms)
