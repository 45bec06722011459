"""Reference exchange rates used when a partner does not state the rate of a pledge."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from services.registry.domain.errors import InvalidValue

REFERENCE_RATE_SOURCE = (
    "Deal Registry reference rates 2025 (INR from the article's $100M = ₹860 crore)"
)


@dataclass(frozen=True)
class ReferenceRates:
    units_per_usd: dict[str, Decimal]
    source: str = REFERENCE_RATE_SOURCE

    def lookup(self, currency: str) -> tuple[Decimal, str]:
        rate = self.units_per_usd.get(currency)
        if rate is None:
            known = ", ".join(sorted(self.units_per_usd))
            raise InvalidValue(
                "payload.rate",
                "required",
                f"no reference rate for {currency} (known: {known}); send payload.rate",
            )
        return rate, self.source


DEFAULT_RATES = ReferenceRates({"USD": Decimal(1), "INR": Decimal(86), "JPY": Decimal(145)})
