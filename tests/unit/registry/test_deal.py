"""Every rule the Deal aggregate enforces, on the aggregate itself (no storage)."""

from __future__ import annotations

from copy import deepcopy
from decimal import Decimal
from uuid import uuid4

import pytest

from services.registry.domain.deal import MAX_PARTIES, Deal
from services.registry.domain.errors import InvalidValue, StateConflict, UnknownReference
from services.registry.domain.values import DealStatus
from tests.unit.registry.support import (
    DEAL_ID,
    IN_FIRM,
    JP_FIRM,
    THIRD_FIRM,
    amount,
    assert_refused,
    new_deal,
    pledge,
    provenance,
    usd_of,
)

D = Decimal
ALL_FORMATS = ["joint_venture", "technology_transfer", "processing_facility", "equity_investment"]


def propose(**overrides: object) -> Deal:
    kwargs: dict[str, object] = {
        "deal_id": DEAL_ID, "title": "Recycling JV", "format": "joint_venture",
        "sector": "recycling", "parties": [JP_FIRM, IN_FIRM], "description": "",
        "provenance": provenance(),
    }
    kwargs.update(overrides)
    return Deal.propose(**kwargs)  # type: ignore[arg-type]


def revise(deal: Deal, pledge_id: str, low: str, high: str, currency: str = "USD") -> None:
    value = amount(low, high, currency)
    deal.revise_pledge(pledge_id, value, usd_of(value), "re-estimate", provenance("rev"))


def sign(deal: Deal, licensor: str = JP_FIRM, licensee: str = IN_FIRM, tech: str = "LFP") -> None:
    deal.sign_tech_transfer(tech, licensor, licensee, provenance("tt"))


def form_jv(deal: Deal, equity: dict[str, str], name: str = "Green Cells") -> None:
    deal.form_joint_venture(name, {k: D(v) for k, v in equity.items()}, provenance("jv"))


def announce(deal: Deal, facility: str = "Plant", location: str = "Pune",
             materials: list[str] | None = None) -> None:
    deal.announce_facility(facility, location, "10 kt/yr", materials or ["lithium"],
                           provenance("fac"))


def cancelled(format: str = "joint_venture") -> Deal:
    deal = new_deal(format)
    deal.cancel("called off", provenance("cancel"))
    return deal


# Proposal.


def test_proposal_sets_state() -> None:
    deal = propose(title="  Recycling JV ", description="  long story  ")
    assert deal.id == DEAL_ID
    assert deal.version == 1
    assert deal.status == DealStatus.PROPOSED.value
    assert (deal.title, deal.format, deal.sector) == ("Recycling JV", "joint_venture", "recycling")
    assert deal.parties == [JP_FIRM, IN_FIRM]
    assert deal.description == "long story"
    assert deal.pledges == {}
    assert (deal.tech_transfer, deal.joint_venture, deal.facility) == (None, None, None)
    (event,) = deal.pending_events
    assert isinstance(event, Deal.Proposed)
    assert event.recorded_by == "partner-a"
    assert event.partner_event_id == "evt-1"


def test_description_is_truncated_to_4000() -> None:
    assert len(propose(description="x" * 5000).description) == 4000


def test_proposal_needs_a_party() -> None:
    with pytest.raises(InvalidValue) as caught:
        propose(parties=[])
    assert (caught.value.field, caught.value.rule) == ("parties", "min_items")


def test_parties_must_be_unique() -> None:
    with pytest.raises(InvalidValue) as caught:
        propose(parties=[JP_FIRM, IN_FIRM, JP_FIRM])
    assert (caught.value.field, caught.value.rule) == ("parties", "unique")


def test_parties_are_limited() -> None:
    assert len(propose(parties=[f"firm-{i:03}" for i in range(MAX_PARTIES)]).parties) == 100
    with pytest.raises(InvalidValue) as caught:
        propose(parties=[f"firm-{i:03}" for i in range(MAX_PARTIES + 1)])
    assert (caught.value.field, caught.value.rule) == ("parties", "max_items")


def test_single_party_deal_is_allowed() -> None:
    assert propose(parties=[IN_FIRM]).parties == [IN_FIRM]


@pytest.mark.parametrize(
    ("overrides", "field", "rule"),
    [
        ({"format": "merger"}, "format", "one_of"),
        ({"format": "JOINT_VENTURE"}, "format", "one_of"),
        ({"sector": "solar"}, "sector", "one_of"),
        ({"title": "   "}, "title", "not_blank"),
        ({"title": "x" * 201}, "title", "max_length"),
    ],
)
def test_proposal_field_rules(overrides: dict[str, object], field: str, rule: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        propose(**overrides)
    assert (caught.value.field, caught.value.rule) == (field, rule)


@pytest.mark.parametrize("format", ALL_FORMATS)
def test_every_format_can_be_proposed(format: str) -> None:
    assert propose(format=format).format == format


# Pledges.


def test_pledge_is_recorded_with_its_usd_value() -> None:
    deal = new_deal()
    pledge(deal, "pl-1", IN_FIRM, "860000000", "1720000000", "INR")
    assert deal.version == 2
    recorded = deal.pledges["pl-1"]
    assert recorded.firm == IN_FIRM
    assert recorded.amount == amount("860000000", "1720000000", "INR")
    assert (recorded.usd.low, recorded.usd.high) == (D("10000000.00"), D("20000000.00"))
    assert recorded.withdrawn is False
    assert deal.active_pledges() == [recorded]
    assert deal.status == DealStatus.PROPOSED.value
    event = deal.pending_events[-1]
    assert isinstance(event, Deal.PledgeMade)
    assert (event.amount_low, event.usd_low, event.units_per_usd) == (
        D("860000000"), D("10000000.00"), D(86))


def test_pledge_id_is_stripped_and_required() -> None:
    deal = new_deal()
    pledge(deal, "  pl-1 ")
    assert list(deal.pledges) == ["pl-1"]
    value = amount("1", "2")
    assert_refused(deal, lambda: deal.make_pledge("  ", IN_FIRM, "IN", value, usd_of(value),
                                                   provenance()), InvalidValue, "pledge_id",
                   "not_blank")
    assert_refused(deal, lambda: deal.make_pledge("p" * 101, IN_FIRM, "IN", value, usd_of(value),
                                                   provenance()), InvalidValue, "pledge_id",
                   "max_length")


def test_no_pledge_on_a_cancelled_deal() -> None:
    deal = cancelled()
    assert_refused(deal, lambda: pledge(deal), StateConflict, "deal_id", "deal_not_cancelled")
    assert deal.pledges == {}


def test_duplicate_pledge_id_is_refused() -> None:
    deal = new_deal()
    pledge(deal, "pl-1", IN_FIRM)
    assert_refused(deal, lambda: pledge(deal, "pl-1", JP_FIRM, "5", "6"), StateConflict,
                   "pledge_id", "unique")
    assert deal.pledges["pl-1"].firm == IN_FIRM


def test_withdrawn_pledge_id_cannot_be_reused() -> None:
    deal = new_deal()
    pledge(deal, "pl-1")
    deal.withdraw_pledge("pl-1", "", provenance("w"))
    assert_refused(deal, lambda: pledge(deal, "pl-1"), StateConflict, "pledge_id", "unique")


def test_pledging_firm_must_be_a_party() -> None:
    deal = new_deal()
    assert_refused(deal, lambda: pledge(deal, "pl-1", THIRD_FIRM), InvalidValue, "firm",
                   "is_party")


def test_several_firms_may_pledge() -> None:
    deal = new_deal()
    pledge(deal, "pl-1", IN_FIRM)
    pledge(deal, "pl-2", JP_FIRM, "5", "6", "JPY")
    pledge(deal, "pl-3", IN_FIRM, "7", "8", "INR")
    assert [p.pledge_id for p in deal.active_pledges()] == ["pl-1", "pl-2", "pl-3"]
    assert deal.version == 4


# Revisions and withdrawals.


def test_revision_changes_amount_and_usd() -> None:
    deal = new_deal()
    pledge(deal, "pl-1", low="100", high="200")
    revise(deal, "pl-1", "8600", "17200", "INR")
    revised = deal.pledges["pl-1"]
    assert revised.amount == amount("8600", "17200", "INR")
    assert (revised.usd.low, revised.usd.high) == (D("100.00"), D("200.00"))
    assert revised.firm == IN_FIRM
    assert isinstance(deal.pending_events[-1], Deal.PledgeRevised)
    assert deal.pending_events[-1].reason == "re-estimate"


def test_revision_repeating_the_amount_is_refused() -> None:
    deal = new_deal()
    pledge(deal, "pl-1", low="100", high="200")
    assert_refused(deal, lambda: revise(deal, "pl-1", "100", "200"), StateConflict, "amount",
                   "changed")
    # The same numbers in another notation are the same amount.
    assert_refused(deal, lambda: revise(deal, "pl-1", "100.00", "200.0"), StateConflict,
                   "amount", "changed")


@pytest.mark.parametrize(("low", "high", "currency"),
                         [("100", "201", "USD"), ("99", "200", "USD"), ("100", "200", "INR")])
def test_revision_changing_any_part_is_accepted(low: str, high: str, currency: str) -> None:
    deal = new_deal()
    pledge(deal, "pl-1", low="100", high="200")
    revise(deal, "pl-1", low, high, currency)
    assert deal.pledges["pl-1"].amount == amount(low, high, currency)


def test_revising_or_withdrawing_an_unknown_pledge_is_refused() -> None:
    deal = new_deal()
    pledge(deal, "pl-1")
    assert_refused(deal, lambda: revise(deal, "pl-9", "1", "2"), UnknownReference, "pledge_id",
                   "exists")
    assert_refused(deal, lambda: deal.withdraw_pledge("pl-9", "", provenance()),
                   UnknownReference, "pledge_id", "exists")


def test_withdrawal_marks_the_pledge() -> None:
    deal = new_deal()
    pledge(deal, "pl-1")
    pledge(deal, "pl-2", JP_FIRM)
    deal.withdraw_pledge("pl-1", "  budget cut ", provenance("w"))
    assert deal.pledges["pl-1"].withdrawn is True
    assert [p.pledge_id for p in deal.active_pledges()] == ["pl-2"]
    assert deal.pending_events[-1].reason == "budget cut"


def test_no_revision_or_withdrawal_of_a_withdrawn_pledge() -> None:
    deal = new_deal()
    pledge(deal, "pl-1")
    deal.withdraw_pledge("pl-1", "", provenance("w"))
    assert_refused(deal, lambda: revise(deal, "pl-1", "1", "2"), StateConflict, "pledge_id",
                   "pledge_not_withdrawn")
    assert_refused(deal, lambda: deal.withdraw_pledge("pl-1", "", provenance()), StateConflict,
                   "pledge_id", "pledge_not_withdrawn")


def test_no_revision_or_withdrawal_on_a_cancelled_deal() -> None:
    deal = new_deal()
    pledge(deal, "pl-1")
    deal.cancel("off", provenance("c"))
    assert_refused(deal, lambda: revise(deal, "pl-1", "1", "2"), StateConflict, "deal_id",
                   "deal_not_cancelled")
    assert_refused(deal, lambda: deal.withdraw_pledge("pl-1", "", provenance()), StateConflict,
                   "deal_id", "deal_not_cancelled")
    assert deal.active_pledges() == []


# Technology transfer.


@pytest.mark.parametrize("format", ["technology_transfer", "joint_venture"])
def test_tech_transfer_agrees_the_deal(format: str) -> None:
    deal = new_deal(format)
    sign(deal, JP_FIRM, IN_FIRM, " LFP cells ")
    assert deal.tech_transfer == {"technology": "LFP cells", "licensor": JP_FIRM,
                                  "licensee": IN_FIRM}
    assert deal.status == DealStatus.AGREED.value


@pytest.mark.parametrize("format", ["processing_facility", "equity_investment"])
def test_tech_transfer_needs_a_tech_transfer_or_jv_deal(format: str) -> None:
    deal = new_deal(format)
    assert_refused(deal, lambda: sign(deal), StateConflict, "type", "deal_format")
    assert deal.tech_transfer is None


def test_licensor_and_licensee_must_differ() -> None:
    deal = new_deal("technology_transfer")
    assert_refused(deal, lambda: sign(deal, IN_FIRM, IN_FIRM), InvalidValue, "licensee",
                   "differs")


def test_licensor_and_licensee_must_be_parties() -> None:
    deal = new_deal("technology_transfer")
    assert_refused(deal, lambda: sign(deal, THIRD_FIRM, IN_FIRM), InvalidValue, "licensor",
                   "is_party")
    assert_refused(deal, lambda: sign(deal, JP_FIRM, THIRD_FIRM), InvalidValue, "licensee",
                   "is_party")


def test_tech_transfer_only_once() -> None:
    deal = new_deal("technology_transfer")
    sign(deal)
    assert_refused(deal, lambda: sign(deal, IN_FIRM, JP_FIRM), StateConflict, "type", "once")
    assert deal.tech_transfer["licensor"] == JP_FIRM  # type: ignore[index]


def test_tech_transfer_needs_a_technology() -> None:
    deal = new_deal("technology_transfer")
    assert_refused(deal, lambda: sign(deal, tech=" "), InvalidValue, "technology", "not_blank")


def test_no_tech_transfer_on_a_cancelled_deal() -> None:
    deal = cancelled("technology_transfer")
    assert_refused(deal, lambda: sign(deal), StateConflict, "deal_id", "deal_not_cancelled")


# Joint venture.


def test_joint_venture_agrees_the_deal() -> None:
    deal = new_deal()
    form_jv(deal, {JP_FIRM: "51", IN_FIRM: "49"}, "  Green Cells ")
    assert deal.joint_venture == {"venture_name": "Green Cells",
                                  "equity": {JP_FIRM: D(51), IN_FIRM: D(49)}}
    assert deal.status == DealStatus.AGREED.value


def test_joint_venture_with_fractional_shares_summing_to_100() -> None:
    deal = new_deal(parties=(JP_FIRM, IN_FIRM, THIRD_FIRM))
    form_jv(deal, {JP_FIRM: "33.3333", IN_FIRM: "33.3333", THIRD_FIRM: "33.3334"})
    assert sum(deal.joint_venture["equity"].values()) == 100  # type: ignore[index]


@pytest.mark.parametrize("format", ["technology_transfer", "processing_facility",
                                    "equity_investment"])
def test_joint_venture_needs_a_joint_venture_deal(format: str) -> None:
    deal = new_deal(format)
    assert_refused(deal, lambda: form_jv(deal, {JP_FIRM: "50", IN_FIRM: "50"}), StateConflict,
                   "type", "deal_format")


@pytest.mark.parametrize(
    ("equity", "field", "rule"),
    [
        ({JP_FIRM: "100"}, "equity", "min_items"),
        ({}, "equity", "min_items"),
        ({JP_FIRM: "0", IN_FIRM: "100"}, f"equity.{JP_FIRM}", "percent"),
        ({JP_FIRM: "150", IN_FIRM: "-50"}, f"equity.{JP_FIRM}", "percent"),
        ({JP_FIRM: "100.0001", IN_FIRM: "-0.0001"}, f"equity.{JP_FIRM}", "percent"),
        ({JP_FIRM: "60", IN_FIRM: "-0.5"}, f"equity.{IN_FIRM}", "percent"),
        ({JP_FIRM: "NaN", IN_FIRM: "50"}, f"equity.{JP_FIRM}", "percent"),
        ({JP_FIRM: "Infinity", IN_FIRM: "50"}, f"equity.{JP_FIRM}", "percent"),
        ({JP_FIRM: "50", IN_FIRM: "49.99"}, "equity", "sums_to_100"),
        ({JP_FIRM: "50", IN_FIRM: "50.0001"}, "equity", "sums_to_100"),
        ({JP_FIRM: "100", IN_FIRM: "100"}, "equity", "sums_to_100"),
        ({JP_FIRM: "50", THIRD_FIRM: "50"}, f"equity.{THIRD_FIRM}", "is_party"),
    ],
)
def test_joint_venture_equity_rules(equity: dict[str, str], field: str, rule: str) -> None:
    deal = new_deal()
    assert_refused(deal, lambda: form_jv(deal, equity), InvalidValue, field, rule)
    assert deal.joint_venture is None
    assert deal.status == DealStatus.PROPOSED.value


def test_share_of_exactly_100_is_allowed_in_range_check() -> None:
    # 100 is within (0, 100]; it is the sum rule that refuses 100 + 100.
    deal = new_deal()
    assert_refused(deal, lambda: form_jv(deal, {JP_FIRM: "100", IN_FIRM: "0.5"}), InvalidValue,
                   "equity", "sums_to_100")


def test_joint_venture_only_once() -> None:
    deal = new_deal()
    form_jv(deal, {JP_FIRM: "50", IN_FIRM: "50"})
    assert_refused(deal, lambda: form_jv(deal, {JP_FIRM: "60", IN_FIRM: "40"}), StateConflict,
                   "type", "once")


def test_joint_venture_needs_a_name() -> None:
    deal = new_deal()
    assert_refused(deal, lambda: form_jv(deal, {JP_FIRM: "50", IN_FIRM: "50"}, ""),
                   InvalidValue, "venture_name", "not_blank")


def test_joint_venture_deal_may_also_sign_a_tech_transfer() -> None:
    deal = new_deal()
    form_jv(deal, {JP_FIRM: "50", IN_FIRM: "50"})
    sign(deal)
    assert deal.status == DealStatus.AGREED.value
    assert deal.tech_transfer is not None and deal.joint_venture is not None


def test_no_joint_venture_on_a_cancelled_deal() -> None:
    deal = cancelled()
    assert_refused(deal, lambda: form_jv(deal, {JP_FIRM: "50", IN_FIRM: "50"}), StateConflict,
                   "deal_id", "deal_not_cancelled")


# Facility.


def test_facility_agrees_the_deal() -> None:
    deal = new_deal("processing_facility")
    announce(deal, " Plant ", " Pune ", [" lithium ", "cobalt"])
    assert deal.facility == {"facility": "Plant", "location": "Pune", "capacity": "10 kt/yr",
                             "materials": ["lithium", "cobalt"]}
    assert deal.status == DealStatus.AGREED.value


@pytest.mark.parametrize("format", ["joint_venture", "technology_transfer",
                                    "equity_investment"])
def test_facility_needs_a_processing_facility_deal(format: str) -> None:
    deal = new_deal(format)
    assert_refused(deal, lambda: announce(deal), StateConflict, "type", "deal_format")


def test_facility_only_once() -> None:
    deal = new_deal("processing_facility")
    announce(deal)
    assert_refused(deal, lambda: announce(deal, "Second plant"), StateConflict, "type", "once")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"facility": " "}, "facility"), ({"location": ""}, "location"),
     ({"materials": ["lithium", "  "]}, "materials")],
)
def test_facility_text_rules(kwargs: dict[str, object], field: str) -> None:
    deal = new_deal("processing_facility")
    assert_refused(deal, lambda: announce(deal, **kwargs), InvalidValue, field,  # type: ignore[arg-type]
                   "not_blank")


def test_no_facility_on_a_cancelled_deal() -> None:
    deal = cancelled("processing_facility")
    assert_refused(deal, lambda: announce(deal), StateConflict, "deal_id", "deal_not_cancelled")


# Cancellation and status.


def test_cancel_records_reason() -> None:
    deal = new_deal()
    deal.cancel("  funding fell through ", provenance("c"))
    assert deal.status == DealStatus.CANCELLED.value
    assert deal.cancellation_reason == "funding fell through"


def test_cancel_twice_is_refused() -> None:
    deal = cancelled()
    error = assert_refused(deal, lambda: deal.cancel("again", provenance()), StateConflict,
                           "deal_id", "deal_not_cancelled")
    assert error.code == "state_conflict"
    assert deal.cancellation_reason == "called off"


def test_cancel_needs_a_reason() -> None:
    deal = new_deal()
    assert_refused(deal, lambda: deal.cancel("  ", provenance()), InvalidValue, "reason",
                   "not_blank")
    assert deal.status == DealStatus.PROPOSED.value


def test_status_proposed_agreed_cancelled() -> None:
    deal = new_deal("technology_transfer")
    assert deal.status == "proposed"
    pledge(deal)
    assert deal.status == "proposed"
    sign(deal)
    assert deal.status == "agreed"
    pledge(deal, "pl-2", JP_FIRM)  # an agreed deal still takes pledges
    assert deal.status == "agreed"
    deal.cancel("off", provenance("c"))
    assert deal.status == "cancelled"
    assert deal.active_pledges() == []
    assert len(deal.pledges) == 2  # history is kept


def test_proposed_deal_can_be_cancelled_directly() -> None:
    deal = new_deal("equity_investment")
    deal.cancel("off", provenance("c"))
    assert deal.status == "cancelled"


def test_cancelled_deal_cannot_become_agreed() -> None:
    for format, agree in [
        ("technology_transfer", sign),
        ("joint_venture", lambda d: form_jv(d, {JP_FIRM: "50", IN_FIRM: "50"})),
        ("processing_facility", announce),
    ]:
        deal = cancelled(format)
        with pytest.raises(StateConflict):
            agree(deal)
        assert deal.status == "cancelled"


def test_versions_count_events() -> None:
    deal = Deal.propose(uuid4(), "t", "joint_venture", "recycling", [JP_FIRM, IN_FIRM], "",
                        provenance())
    pledge(deal)
    revise(deal, "pl-1", "1", "3")
    deal.withdraw_pledge("pl-1", "", provenance())
    deal.cancel("off", provenance())
    assert deal.version == 5
    assert [e.originator_version for e in deal.collect_events()] == [1, 2, 3, 4, 5]


def test_a_copied_deal_decides_without_changing_the_original() -> None:
    # Cached deals are copied for each decision; the copy shares only immutable parts.
    original = new_deal()
    pledge(original, "pl-1")
    pledge(original, "pl-2", JP_FIRM)
    original.collect_events()
    copy = deepcopy(original)
    copy.withdraw_pledge("pl-1", "budget cut", provenance("w"))
    copy.revise_pledge("pl-2", amount("300", "400"), usd_of(amount("300", "400")), "",
                       provenance("r"))
    assert original.pledges["pl-1"].withdrawn is False
    assert original.pledges["pl-2"].amount == amount("100", "200")
    assert original.version == 3 and copy.version == 5
    assert original.last_hash != copy.last_hash
    assert copy.pending_events[0].previous_hash == original.last_hash
