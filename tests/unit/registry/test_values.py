"""Value objects: amounts, currencies, countries, firm codes, enums and the USD conversion."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.registry.domain.errors import InvalidValue
from services.registry.domain.values import (
    AmountRange,
    DealFormat,
    DealStatus,
    FirmKind,
    Sector,
    UsdConversion,
    parse_enum,
    require_country,
    require_currency,
    require_finite_decimal,
    require_firm_code,
    require_text,
)

D = Decimal


def refused(call, field: str, rule: str) -> InvalidValue:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidValue) as caught:
        call()
    assert (caught.value.field, caught.value.rule) == (field, rule)
    assert caught.value.message
    return caught.value


# Amount ranges.


@pytest.mark.parametrize(("low", "high"), [("1", "1"), ("0.000001", "5"), ("100", "400")])
def test_amount_range_accepts_positive_low_le_high(low: str, high: str) -> None:
    value = AmountRange.of(D(low), D(high), "USD")
    assert value == AmountRange(D(low), D(high), "USD")


def test_amount_range_keeps_exact_decimals() -> None:
    value = AmountRange.of(D("1.50"), D("2.500"), "INR")
    assert str(value.low) == "1.50"
    assert str(value.high) == "2.500"


def test_low_above_high_is_refused() -> None:
    error = refused(lambda: AmountRange.of(D("2"), D("1"), "USD"), "amount.low", "low_le_high")
    assert "2" in error.message and "1" in error.message


def test_field_prefix_is_used_in_errors() -> None:
    refused(
        lambda: AmountRange.of(D("2"), D("1.99"), "USD", "payload.amount"),
        "payload.amount.low", "low_le_high",
    )


@pytest.mark.parametrize(
    ("low", "high", "field"),
    [
        ("0", "1", "amount.low"),
        ("-1", "1", "amount.low"),
        ("-5", "-1", "amount.low"),
        ("1", "0", "amount.high"),
        ("1", "-1", "amount.high"),
        ("0", "0", "amount.low"),
    ],
)
def test_amounts_must_be_positive(low: str, high: str, field: str) -> None:
    refused(lambda: AmountRange.of(D(low), D(high), "USD"), field, "positive")


@pytest.mark.parametrize("bad", ["NaN", "sNaN", "Infinity", "-Infinity"])
def test_amounts_must_be_finite(bad: str) -> None:
    refused(lambda: AmountRange.of(D(bad), D("1"), "USD"), "amount.low", "finite")
    refused(lambda: AmountRange.of(D("1"), D(bad), "USD"), "amount.high", "finite")


@pytest.mark.parametrize("code", ["USD", "INR", "JPY", "EUR", "GBP", "CNY"])
def test_known_currencies_are_accepted(code: str) -> None:
    assert require_currency(code) == code
    assert AmountRange.of(D(1), D(2), code).currency == code


@pytest.mark.parametrize("code", ["XYZ", "usd", "US", "USDT", "", "BTC", "DEM"])
def test_unknown_currency_is_refused(code: str) -> None:
    refused(lambda: AmountRange.of(D(1), D(2), code), "amount.currency", "iso_4217")
    refused(lambda: require_currency(code, "x"), "x", "iso_4217")


def test_require_finite_decimal() -> None:
    assert require_finite_decimal(D("-3.5"), "f") == D("-3.5")
    refused(lambda: require_finite_decimal(D("NaN"), "f"), "f", "finite")


# Countries.


@pytest.mark.parametrize("code", ["JP", "IN", "US", "SG", "DE"])
def test_known_countries_are_accepted(code: str) -> None:
    assert require_country(code) == code


@pytest.mark.parametrize("code", ["XX", "jp", "JPN", "J", "", "EU", "UK"])
def test_unknown_country_is_refused(code: str) -> None:
    refused(lambda: require_country(code), "country", "iso_3166_alpha2")
    refused(lambda: require_country(code, "payload.country"), "payload.country",
            "iso_3166_alpha2")


# Firm codes.


@pytest.mark.parametrize(
    "code", ["tata-motors", "abc", "a1b", "7-eleven", "jbic", "a" * 64, "a-b-c-d", "m--m"]
)
def test_valid_firm_codes(code: str) -> None:
    assert require_firm_code(code) == code


@pytest.mark.parametrize(
    "code",
    [
        "ab",            # too short
        "a" * 65,        # too long
        "Tata-Motors",   # uppercase
        "-tata",         # leading dash
        "tata-",         # trailing dash
        "tata_motors",   # underscore
        "tata motors",   # space
        "tata.motors",
        "tätä",
        "",
        "\ntata",
    ],
)
def test_invalid_firm_codes_are_refused(code: str) -> None:
    refused(lambda: require_firm_code(code), "code", "firm_code")


def test_firm_code_with_trailing_newline_is_refused() -> None:
    refused(lambda: require_firm_code("tata-motors\n"), "code", "firm_code")


# Enumerations.


@pytest.mark.parametrize(
    ("enum", "values"),
    [
        (Sector, {"electric_vehicles", "battery_manufacturing", "recycling",
                  "mineral_processing", "joint_ventures_tech_transfer"}),
        (DealFormat, {"joint_venture", "technology_transfer", "processing_facility",
                      "equity_investment"}),
        (DealStatus, {"proposed", "agreed", "cancelled"}),
        (FirmKind, {"manufacturer", "automaker", "battery_maker", "recycler",
                    "mineral_processor", "private_equity", "trading_house", "government_body",
                    "other"}),
    ],
)
def test_enum_values_are_the_documented_ones(enum: type, values: set[str]) -> None:
    assert {member.value for member in enum} == values
    for value in values:
        assert parse_enum(enum, value, "f") == value


@pytest.mark.parametrize(
    ("enum", "bad", "field"),
    [
        (Sector, "solar", "sector"),
        (Sector, "Recycling", "sector"),
        (DealFormat, "merger", "format"),
        (DealFormat, "", "format"),
        (FirmKind, "bank", "kind"),
        (FirmKind, "AUTOMAKER", "kind"),
    ],
)
def test_unknown_enum_value_is_refused_naming_field_and_choices(
    enum: type, bad: str, field: str
) -> None:
    error = refused(lambda: parse_enum(enum, bad, field), field, "one_of")
    for member in enum:
        assert member.value in error.message


# Text.


def test_require_text_strips() -> None:
    assert require_text("  Tata Motors \n", "name") == "Tata Motors"


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_text_is_refused(blank: str) -> None:
    refused(lambda: require_text(blank, "name"), "name", "not_blank")


def test_text_length_limit_applies_after_stripping() -> None:
    assert require_text(" " + "x" * 200 + " ", "name") == "x" * 200
    refused(lambda: require_text("x" * 201, "name"), "name", "max_length")
    assert require_text("x" * 10, "t", 10) == "x" * 10
    refused(lambda: require_text("x" * 11, "t", 10), "t", "max_length")


# USD conversion.


def test_inr_converts_exactly_at_86() -> None:
    inr = AmountRange.of(D("860000000"), D("3440000000"), "INR")
    usd = UsdConversion.of(inr, D(86), "reference")
    assert usd.low == D("10000000.00")
    assert usd.high == D("40000000.00")
    assert str(usd.low) == "10000000.00"  # exactly two decimals
    assert usd.units_per_usd == D(86)
    assert usd.source == "reference"


def test_jpy_converts_at_145() -> None:
    jpy = AmountRange.of(D("14500000000"), D("58000000000"), "JPY")
    usd = UsdConversion.of(jpy, D(145), "reference")
    assert (str(usd.low), str(usd.high)) == ("100000000.00", "400000000.00")


@pytest.mark.parametrize(
    ("value", "rate", "expected"),
    [
        ("0.125", "1", "0.12"),    # half to even: down
        ("0.135", "1", "0.14"),    # half to even: up
        ("0.145", "1", "0.14"),
        ("0.1251", "1", "0.13"),   # above half rounds up
        ("86.43", "86", "1.00"),   # 1.005 -> 1.00 (half-up would give 1.01)
        ("87.29", "86", "1.02"),   # 1.015 -> 1.02
        ("100", "3", "33.33"),
        ("200", "3", "66.67"),
        ("1", "145", "0.01"),      # 0.00689... -> 0.01
    ],
)
def test_conversion_rounds_to_cents_half_even(value: str, rate: str, expected: str) -> None:
    currency = "USD" if rate == "1" else "INR"
    source = AmountRange.of(D(value), D(value), currency)
    usd = UsdConversion.of(source, D(rate), "r")
    assert str(usd.low) == expected
    assert str(usd.high) == expected


def test_usd_amount_converts_at_rate_one() -> None:
    value = AmountRange.of(D("100.50"), D("200"), "USD")
    usd = UsdConversion.of(value, D(1), "identity")
    assert (usd.low, usd.high) == (D("100.50"), D("200.00"))
    assert UsdConversion.of(value, D("1.000"), "identity").low == D("100.50")


@pytest.mark.parametrize("rate", ["2", "0.5", "86", "1.0001"])
def test_usd_amount_at_another_rate_is_refused(rate: str) -> None:
    value = AmountRange.of(D(1), D(2), "USD")
    refused(lambda: UsdConversion.of(value, D(rate), "r"), "rate.units_per_usd", "usd_is_one")


@pytest.mark.parametrize("rate", ["0", "-86"])
def test_rate_must_be_positive(rate: str) -> None:
    value = AmountRange.of(D(1), D(2), "INR")
    refused(lambda: UsdConversion.of(value, D(rate), "r"), "rate.units_per_usd", "positive")


@pytest.mark.parametrize("rate", ["NaN", "Infinity"])
def test_rate_must_be_finite(rate: str) -> None:
    value = AmountRange.of(D(1), D(2), "INR")
    refused(lambda: UsdConversion.of(value, D(rate), "r"), "rate.units_per_usd", "finite")


def test_rate_source_is_required_and_stripped() -> None:
    value = AmountRange.of(D(1), D(2), "INR")
    refused(lambda: UsdConversion.of(value, D(86), "  "), "rate.rate_source", "not_blank")
    assert UsdConversion.of(value, D(86), "  RBI  ").source == "RBI"


def test_amount_too_large_to_convert_is_refused() -> None:
    value = AmountRange.of(D("1E+30"), D("1E+30"), "INR")
    refused(lambda: UsdConversion.of(value, D("1E-10"), "r"), "amount", "convertible")
