from decimal import Decimal

import pytest

from services.projections.read_model.indian_money import (
    decimal_text,
    group_indian,
    in_crore,
    in_lakh,
    inr_range_display,
)


@pytest.mark.parametrize(("value", "text"), [
    ("0", "0"),
    ("999", "999"),
    ("1000", "1,000"),
    ("100000", "1,00,000"),
    ("12345678", "1,23,45,678"),
    ("1234567890.25", "1,23,45,67,890.25"),
    ("-1234567", "-12,34,567"),
])
def test_groups_digits_the_indian_way(value: str, text: str) -> None:
    assert group_indian(Decimal(value)) == text


@pytest.mark.parametrize(("value", "text"), [
    ("1E+3", "1000"), ("3500.000", "3500"), ("0.250", "0.25"), ("0.000", "0"), ("-0", "0"),
])
def test_decimal_text_is_plain_and_exact(value: str, text: str) -> None:
    assert decimal_text(Decimal(value)) == text


def test_crore_and_lakh_are_exact() -> None:
    assert in_crore(Decimal("8600000000")) == Decimal("860")
    assert in_crore(Decimal("1")) == Decimal("0.0000001")
    assert in_lakh(Decimal("250000")) == Decimal("2.5")


@pytest.mark.parametrize(("low", "high", "display"), [
    ("8600000000", "35000000000", "₹860–3,500 crore"),
    ("830000000", "830000000", "₹83 crore"),
    ("1000000000000", "1250000000000", "₹1,00,000–1,25,000 crore"),
    ("5000000", "75000000", "₹0.5–7.5 crore"),
    ("500000", "7500000", "₹5–75 lakh"),
    ("50000", "75000", "₹50,000–75,000"),
    ("8612345678", "8612345678", "₹861.23 crore"),
])
def test_inr_ranges_read_as_indian_readers_expect(low: str, high: str, display: str) -> None:
    assert inr_range_display(Decimal(low), Decimal(high)) == display


def test_crore_of_amounts_beyond_default_precision_stays_exact() -> None:
    huge = Decimal("123456789012345678901234567890.123456")
    assert decimal_text(in_crore(huge)) == "12345678901234567890123.4567890123456"
