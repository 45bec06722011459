"""Whose events a key may record: a partner key speaks for the firms it is bound to.

An admin key acts for every firm. A partner key acts for its firms: it registers only their
codes, proposes deals and records meetings only with one of them among the parties or
attendees, makes, revises and withdraws only their pledges, and signs, forms, announces or
cancels only on a deal (or agreement) one of them is party to. Every such check lives here;
the handler calls them with the state it has loaded, before the aggregate decides.

A partner key bound to no firm is a key made before keys carried firms. Unless the
operator sets `DEALREG_UNBOUND_PARTNER_KEYS=refuse`, it keeps acting for every firm, as it
always did, and its writes log a warning (the first, then at most one a minute per key:
one per write cost a tenth of a busy server's CPU), so that the operator sees which keys
still need `dealreg keys bind`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from services.registry.application.errors import NotAuthorized
from services.registry.domain.deal import Deal

log = logging.getLogger("dealreg.authority")

UnboundPartnerKeys = Literal["allow", "refuse"]
# Roles are plain strings here: the application knows what a role may do, not how keys work.
ACTS_FOR_EVERY_FIRM = frozenset({"admin"})
UNBOUND_WARNING_INTERVAL_SECONDS = 60.0


class _UnboundKeyWarnings:
    """When each unbound key last had its warning logged."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, name: str) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(name)
            if last is not None and now - last < UNBOUND_WARNING_INTERVAL_SECONDS:
                return False
            self._last[name] = now
            return True


_unbound_warnings = _UnboundKeyWarnings()


@dataclass(frozen=True)
class Authority:
    """The firms a key speaks for; `None` means every firm."""

    firms: frozenset[str] | None = None

    @classmethod
    def of_key(
        cls, name: str, role: str, firms: Iterable[str], unbound: UnboundPartnerKeys
    ) -> Authority:
        """What a key may do, from its role and the firms it is bound to."""
        bound = frozenset(firms)
        if role in ACTS_FOR_EVERY_FIRM:
            return cls()
        if bound or unbound == "refuse":
            return cls(bound)
        if _unbound_warnings.due(name):
            log.warning(
                "key %r is bound to no firm and so acts for every firm; bind it with "
                "`dealreg keys bind %s --firm CODE` (then set DEALREG_UNBOUND_PARTNER_KEYS="
                "refuse); logged at most once a minute per key",
                name, name, extra={"fields": {"principal": name, "rule": "unbound_partner_key"}},
            )
        return cls()

    def acts_for(self, code: str) -> bool:
        return self.firms is None or code in self.firms

    def require_firm(self, code: str, field: str, what: str) -> None:
        """Refuse `what` unless the key speaks for this firm."""
        if not self.acts_for(code):
            self._refuse(field, "acts_for_firm", [code], what)

    def require_one_of(self, codes: Iterable[str], field: str, rule: str, what: str) -> None:
        """Refuse `what` unless the key speaks for at least one of these firms."""
        named = list(codes)
        if not any(self.acts_for(code) for code in named):
            self._refuse(field, rule, named, what)

    def require_party(self, deal: Deal, what: str) -> None:
        """Refuse `what` unless one of the key's firms is a party to the deal."""
        self.require_one_of(deal.parties, "payload.deal_id", "party_to_deal",
                            f"{what} {deal.id} between {', '.join(deal.parties)}")

    def require_own_pledge(self, deal: Deal, pledge_id: str, what: str) -> None:
        """Refuse `what` unless the pledge is one of the key's firms'. A pledge the deal does
        not have is for the deal to refuse (422), whatever the key."""
        pledge = deal.pledges.get(pledge_id)
        if pledge is not None and not self.acts_for(pledge.firm):
            self._refuse("payload.pledge_id", "own_pledge", [pledge.firm],
                         f"{what} {pledge_id!r} of firm {pledge.firm!r}")

    def _refuse(self, field: str, rule: str, firms: list[str], what: str) -> None:
        acts_for = sorted(self.firms or ())
        speaks = (f"it acts for {', '.join(acts_for)}" if acts_for else
                  "it is bound to no firm (an admin binds firms: dealreg keys bind NAME "
                  "--firm CODE)")
        raise NotAuthorized(field, rule, f"this key may not {what}: {speaks}", firms, acts_for)


# Trusted in-process callers (the demo loader, tests) and admin keys.
EVERY_FIRM = Authority()
