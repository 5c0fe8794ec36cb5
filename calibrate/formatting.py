"""Numbers in words: rates, figures and thresholds as every surface prints them."""

from __future__ import annotations

import math

__all__ = ["format_figure", "format_rate", "format_threshold"]


def format_rate(x: float) -> str:
    """A rate as a percentage with three significant digits (``0.00123`` -> ``0.123%``)."""
    return f"{100 * x:.3g}%"


def format_figure(x: float | None, digits: int = 4, *, sign: bool = False) -> str:
    """``x`` with ``digits`` significant digits (trailing zeros kept: ``0.9690``).

    Thousands are separated (``12,346``); very small or large magnitudes use an exponent.
    ``None`` and NaN are ``-``.
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    x = float(x)
    plus = "+" if sign and x > 0 else ""
    if math.isinf(x):
        return f"{plus}{x}"
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - magnitude)
    if decimals and abs(round(x, decimals)) >= 10 ** (magnitude + 1):
        decimals -= 1  # rounding carried into a new digit: 9.99996 -> 10.00
    if not -4 <= magnitude < 6:
        return f"{plus}{x:#.{digits - 1}e}"
    text = f"{x:,.{decimals}f}"
    return plus + text


def format_threshold(t: float, *, never: str = "never fire", always: str = "always fire") -> str:
    """A threshold exactly as chosen (a rounded value could change decisions), or the
    words for the two infinite rules."""
    if math.isinf(t):
        return never if t > 0 else always
    return repr(float(t))
