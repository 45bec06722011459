"""Whose events a key may record, decided from its role and firms alone (no database)."""

from __future__ import annotations

import logging

import pytest

from services.registry.application import authority
from services.registry.application.authority import EVERY_FIRM, Authority
from services.registry.application.errors import NotAuthorized
from tests.unit.registry.support import IN_FIRM, JP_FIRM, THIRD_FIRM, new_deal, pledge


def test_admin_and_unbound_partner_keys_act_for_every_firm(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authority, "_unbound_warnings", authority._UnboundKeyWarnings())
    assert Authority.of_key("ops", "admin", (), "refuse") == EVERY_FIRM
    with caplog.at_level(logging.WARNING, logger="dealreg.authority"):
        assert Authority.of_key("old-erp", "partner", (), "allow") == EVERY_FIRM
        assert Authority.of_key("old-erp", "partner", (), "allow") == EVERY_FIRM
        assert Authority.of_key("new-erp", "partner", (), "allow") == EVERY_FIRM
    # Once per key, not once per write.
    assert caplog.text.count("'old-erp'") == 1 and "new-erp" in caplog.text
    assert Authority.of_key("old-erp", "partner", (), "refuse") == Authority(frozenset())
    assert Authority.of_key("tata-erp", "partner", [IN_FIRM], "allow") == \
        Authority(frozenset({IN_FIRM}))


def test_checks_name_the_field_the_rule_and_the_firms() -> None:
    tata = Authority(frozenset({IN_FIRM}))
    tata.require_firm(IN_FIRM, "payload.code", "register it")
    with pytest.raises(NotAuthorized) as refused:
        tata.require_firm(JP_FIRM, "payload.code", f"register firm {JP_FIRM!r}")
    assert (refused.value.field, refused.value.rule, refused.value.firms,
            refused.value.acts_for) == ("payload.code", "acts_for_firm", [JP_FIRM], [IN_FIRM])
    assert JP_FIRM in refused.value.message and IN_FIRM in refused.value.message

    deal = new_deal(parties=(JP_FIRM, IN_FIRM))
    pledge(deal, "pl-jp", JP_FIRM)
    pledge(deal, "pl-in", IN_FIRM)
    tata.require_party(deal, "cancel deal")
    tata.require_own_pledge(deal, "pl-in", "withdraw pledge")
    tata.require_own_pledge(deal, "pl-unknown", "withdraw pledge")  # the deal refuses it
    with pytest.raises(NotAuthorized) as refused:
        tata.require_own_pledge(deal, "pl-jp", "withdraw pledge")
    assert (refused.value.rule, refused.value.firms) == ("own_pledge", [JP_FIRM])
    with pytest.raises(NotAuthorized) as refused:
        Authority(frozenset({THIRD_FIRM})).require_party(deal, "cancel deal")
    assert (refused.value.field, refused.value.rule) == ("payload.deal_id", "party_to_deal")
