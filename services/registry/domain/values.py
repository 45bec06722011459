"""Value objects of the deal domain: sectors, formats, money ranges and their USD conversion,
and a pledge's terms: its instrument and its schedule of tranches."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from enum import StrEnum
from typing import Any, TypeVar

from services.registry.domain.errors import InvalidValue


class Sector(StrEnum):
    ELECTRIC_VEHICLES = "electric_vehicles"
    BATTERY_MANUFACTURING = "battery_manufacturing"
    RECYCLING = "recycling"
    MINERAL_PROCESSING = "mineral_processing"
    JOINT_VENTURES_TECH_TRANSFER = "joint_ventures_tech_transfer"


class DealFormat(StrEnum):
    JOINT_VENTURE = "joint_venture"
    TECHNOLOGY_TRANSFER = "technology_transfer"
    PROCESSING_FACILITY = "processing_facility"
    EQUITY_INVESTMENT = "equity_investment"


class DealStatus(StrEnum):
    PROPOSED = "proposed"
    AGREED = "agreed"
    CANCELLED = "cancelled"


class Instrument(StrEnum):
    """How a pledge is to be paid: shares, a loan, a grant, or technology in kind."""

    EQUITY = "equity"
    DEBT = "debt"
    GRANT = "grant"
    IN_KIND_TECHNOLOGY = "in_kind_technology"


class FirmKind(StrEnum):
    MANUFACTURER = "manufacturer"
    AUTOMAKER = "automaker"
    BATTERY_MAKER = "battery_maker"
    RECYCLER = "recycler"
    MINERAL_PROCESSOR = "mineral_processor"
    PRIVATE_EQUITY = "private_equity"
    TRADING_HOUSE = "trading_house"
    GOVERNMENT_BODY = "government_body"
    OTHER = "other"


# ISO 4217 active codes. Kept inline so the domain needs nothing beyond the standard library.
ISO_CURRENCIES = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD
    BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR
    FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD
    JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT
    MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG
    QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS
    TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR
    ZMW ZWL""".split()
)

# ISO 3166-1 alpha-2 codes.
ISO_COUNTRIES = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO
    BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK
    DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR
    GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM
    KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP
    MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL
    PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST
    SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG
    VI VN VU WF WS YE YT ZA ZM ZW""".split()
)

FIRM_CODE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$")
CENT = Decimal("0.01")
E = TypeVar("E", bound=StrEnum)


def parse_enum(enum: type[E], value: str, field: str) -> E:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise InvalidValue(field, "one_of", f"{field} must be one of: {allowed}") from None


def require_text(value: str, field: str, max_length: int = 200) -> str:
    text = value.strip()
    if not text:
        raise InvalidValue(field, "not_blank", f"{field} must not be blank")
    if len(text) > max_length:
        raise InvalidValue(field, "max_length", f"{field} must be at most {max_length} characters")
    return text


def require_country(code: str, field: str = "country") -> str:
    if code not in ISO_COUNTRIES:
        raise InvalidValue(
            field, "iso_3166_alpha2", f"{field} must be an ISO 3166 alpha-2 code, got {code!r}"
        )
    return code


def require_firm_code(code: str, field: str = "code") -> str:
    if not FIRM_CODE_PATTERN.fullmatch(code):
        raise InvalidValue(
            field,
            "firm_code",
            f"{field} must be 3-64 lowercase letters, digits or dashes, got {code!r}",
        )
    return code


def require_currency(code: str, field: str = "currency") -> str:
    if code not in ISO_CURRENCIES:
        raise InvalidValue(
            field, "iso_4217", f"{field} must be a known ISO 4217 currency code, got {code!r}"
        )
    return code


def require_finite_decimal(value: Decimal, field: str) -> Decimal:
    if not value.is_finite():
        raise InvalidValue(field, "finite", f"{field} must be a finite number")
    return value


@dataclass(frozen=True)
class AmountRange:
    """A pledge as partners state it: an exact low–high range in one currency."""

    low: Decimal
    high: Decimal
    currency: str

    @classmethod
    def of(cls, low: Decimal, high: Decimal, currency: str, field: str = "amount") -> AmountRange:
        require_currency(currency, f"{field}.currency")
        for name, value in (("low", low), ("high", high)):
            require_finite_decimal(value, f"{field}.{name}")
            if value <= 0:
                raise InvalidValue(f"{field}.{name}", "positive", f"{field}.{name} must be > 0")
        if low > high:
            raise InvalidValue(
                f"{field}.low", "low_le_high", f"{field}.low ({low}) must be <= high ({high})"
            )
        return cls(low, high, currency)


@dataclass(frozen=True)
class UsdConversion:
    """The USD value of an amount range, with the rate and its source so the figure can be audited.

    `units_per_usd` is how many units of the pledge currency buy one US dollar (86 for INR).
    """

    low: Decimal
    high: Decimal
    units_per_usd: Decimal
    source: str

    @classmethod
    def of(cls, amount: AmountRange, units_per_usd: Decimal, source: str) -> UsdConversion:
        require_finite_decimal(units_per_usd, "rate.units_per_usd")
        if units_per_usd <= 0:
            raise InvalidValue("rate.units_per_usd", "positive", "units_per_usd must be > 0")
        if amount.currency == "USD" and units_per_usd != 1:
            raise InvalidValue(
                "rate.units_per_usd", "usd_is_one", "a USD amount converts at rate 1"
            )
        source = require_text(source, "rate.rate_source")
        try:
            low = (amount.low / units_per_usd).quantize(CENT, rounding=ROUND_HALF_EVEN)
            high = (amount.high / units_per_usd).quantize(CENT, rounding=ROUND_HALF_EVEN)
        except InvalidOperation:
            raise InvalidValue("amount", "convertible", "amount is too large to convert") from None
        return cls(low, high, units_per_usd, source)


# More tranches than monthly payments over ten years is not a schedule anyone states.
MAX_TRANCHES = 120


@dataclass(frozen=True)
class Tranche:
    """One payment of a pledge's schedule: when it is due, and how much, in the pledge's
    currency. Dates come in already within the range the registry takes (the submission's
    `due_date`, checked at the door by contracts.moments' DATE, as every date is)."""

    due_date: date
    amount: Decimal

    def as_event_field(self) -> dict[str, Any]:
        """As an event stores it: plain JSON (an ISO date), so it hashes and transcodes as
        every other field does."""
        return {"due_date": self.due_date.isoformat(), "amount": self.amount}

    @classmethod
    def of_event_field(cls, stored: dict[str, Any]) -> Tranche:
        return cls(date.fromisoformat(stored["due_date"]), Decimal(stored["amount"]))


def tranche_schedule(
    tranches: Sequence[tuple[date, Decimal]], amount: AmountRange, field: str = "tranches"
) -> tuple[Tranche, ...]:
    """A pledge's schedule of (due date, amount) pairs, if it keeps the rules: at most
    MAX_TRANCHES, each amount finite and positive, dates strictly ascending, and the amounts
    adding up to no more than the pledge's high amount. An empty schedule says none."""
    if len(tranches) > MAX_TRANCHES:
        raise InvalidValue(field, "max_items", f"a pledge has at most {MAX_TRANCHES} tranches")
    schedule: list[Tranche] = []
    for index, (due_date, value) in enumerate(tranches):
        where = f"{field}[{index}]"
        require_finite_decimal(value, f"{where}.amount")
        if value <= 0:
            raise InvalidValue(f"{where}.amount", "positive", f"{where}.amount must be > 0")
        if schedule and due_date <= schedule[-1].due_date:
            raise InvalidValue(
                f"{where}.due_date", "ascending",
                f"{where}.due_date ({due_date}) must be after the tranche before it "
                f"({schedule[-1].due_date})",
            )
        schedule.append(Tranche(due_date, value))
    require_schedule_within(tuple(schedule), amount, field, "sum_le_high")
    return tuple(schedule)


def require_schedule_within(
    schedule: tuple[Tranche, ...], amount: AmountRange, field: str, rule: str
) -> None:
    """Refuse, naming `field` and `rule`, a schedule whose tranches add up to more than the
    pledge's high amount."""
    with localcontext() as exact:
        exact.prec = 80  # 120 amounts of 24 digits add up exactly
        total = sum((t.amount for t in schedule), Decimal(0))
    if total > amount.high:
        raise InvalidValue(
            field, rule,
            f"the tranches add up to {total} {amount.currency}, above the pledge's high "
            f"amount ({amount.high})",
        )


@dataclass(frozen=True)
class PledgeTerms:
    """How a pledge is to be paid: its instrument (None: not stated, as a pledge made before
    event schema v2 or submitted in v1) and its schedule of tranches (possibly none)."""

    instrument: str | None = None
    tranches: tuple[Tranche, ...] = ()

    @classmethod
    def of(
        cls, instrument: str | None, tranches: Sequence[tuple[date, Decimal]],
        amount: AmountRange, prefix: str = "",
    ) -> PledgeTerms:
        """Terms as a partner states them, checked against the pledge's amount; fields are
        named with `prefix` ("payload." at the API)."""
        if instrument is None:
            if tranches:
                raise InvalidValue(f"{prefix}instrument", "required_with_tranches",
                                   "a schedule of tranches needs the pledge's instrument")
            return cls()
        return cls(parse_enum(Instrument, instrument, f"{prefix}instrument").value,
                   tranche_schedule(tranches, amount, f"{prefix}tranches"))

    def event_fields(self) -> dict[str, Any]:
        """The fields of a pledge event that state these terms."""
        return {"instrument": self.instrument,
                "tranches": [tranche.as_event_field() for tranche in self.tranches]}


# The terms of a pledge that states none: made before event schema v2, or submitted in v1.
NOT_STATED = PledgeTerms()
