"""Exact amounts as text, and rupees the way Indian readers write them (lakh and crore).

Indian grouping puts a comma after the last three digits, then after every two:
12,34,56,789. One lakh is 1,00,000 and one crore is 1,00,00,000.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext

LAKH = Decimal(100_000)
CRORE = Decimal(10_000_000)
# Displays are for people; the exact figures travel beside them.
DISPLAY_STEP = Decimal("0.01")


def decimal_text(value: Decimal) -> str:
    """The exact value in plain notation, without exponent or trailing zeros: "3500", "0.25"."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def group_indian(value: Decimal) -> str:
    """The value with Indian digit grouping: 1234567.5 -> "12,34,567.5"."""
    text = decimal_text(abs(value))
    whole, dot, fraction = text.partition(".")
    if len(whole) > 3:
        head, last_three = whole[:-3], whole[-3:]
        pairs = [head[max(i - 2, 0):i] for i in range(len(head), 0, -2)]
        whole = ",".join([*reversed(pairs), last_three])
    sign = "-" if value < 0 and text != "0" else ""
    return f"{sign}{whole}{dot}{fraction}"


def shift_point(value: Decimal, places: int) -> Decimal:
    """value × 10**places, exactly: only the exponent changes (scaleb would round at 28 digits)."""
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):  # NaN and infinity have no point to move.
        return value
    return Decimal((sign, digits, exponent + places))


def in_crore(rupees: Decimal) -> Decimal:
    """Rupees expressed in crore, exactly."""
    return shift_point(rupees, -7)


def in_lakh(rupees: Decimal) -> Decimal:
    """Rupees expressed in lakh, exactly."""
    return shift_point(rupees, -5)


def inr_range_display(low: Decimal, high: Decimal) -> str:
    """A rupee range as Indians write it, e.g. "₹860–3,500 crore", rounded to 0.01 of the unit.

    The unit (crore, lakh or plain rupees) is chosen by the larger end so both ends share it.
    """
    largest = max(abs(low), abs(high))
    if largest >= CRORE:
        ends, unit = (in_crore(low), in_crore(high)), " crore"
    elif largest >= LAKH:
        ends, unit = (in_lakh(low), in_lakh(high)), " lakh"
    else:
        ends, unit = (low, high), ""
    with localcontext() as roomy:
        roomy.prec = 80  # quantize refuses results longer than the context's precision.
        shown = [group_indian(end.quantize(DISPLAY_STEP, rounding=ROUND_HALF_UP)) for end in ends]
    figure = shown[0] if shown[0] == shown[1] else f"{shown[0]}–{shown[1]}"
    return f"₹{figure}{unit}"
