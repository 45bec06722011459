"""The read side's sums never round: at EXACT_PRECISION a sum that would round raises."""

from __future__ import annotations

from decimal import Decimal, Inexact

import pytest

from services.projections.read_model.tables import (
    EXACT_ARITHMETIC,
    EXACT_PRECISION,
    exact_arithmetic,
)

# Every significant digit the precision holds.
FULL = Decimal("9" * EXACT_PRECISION)


def test_a_sum_within_the_precision_is_exact() -> None:
    with exact_arithmetic():
        assert Decimal("8600000000.10") + Decimal("0.000001") == Decimal("8600000000.100001")
    assert EXACT_ARITHMETIC.add(FULL, Decimal(-8)) == Decimal("9" * (EXACT_PRECISION - 1) + "1")


def test_a_sum_that_would_round_raises_in_the_context_and_through_its_methods() -> None:
    with exact_arithmetic(), pytest.raises(Inexact):
        _ = FULL + Decimal("0.5")  # 81 significant digits
    with pytest.raises(Inexact):
        EXACT_ARITHMETIC.add(FULL, Decimal("0.5"))
