"""Input checks shared by every layer: numbers, rates, confidence levels.

Each check returns the value as a plain ``float`` or raises :class:`InputError` with a
message that names the parameter and says what a valid value looks like, so policies,
bounds and study files all word the same mistake the same way.
"""

from __future__ import annotations

import math
from numbers import Real

from calibrate.errors import InputError

__all__ = ["check_confidence", "check_cost", "check_number", "check_prevalence", "check_rate"]


def check_number(value, name: str) -> float:
    """``value`` as a float when it is a real number (not a bool, not a string).

    Parameters
    ----------
    value : object
    name : str
        The parameter or key, used in the message.

    Returns
    -------
    float

    Raises
    ------
    InputError
        When ``value`` is not a real number.
    """
    # bool is an int subclass, but "true" is never a cost or a rate a user meant.
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InputError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
    return float(value)


def check_confidence(confidence, name: str = "confidence") -> float:
    """A confidence level strictly between 0 and 1 (e.g. 0.95)."""
    c = check_number(confidence, name)
    if not 0.0 < c < 1.0:
        raise InputError(
            f"{name} must be strictly between 0 and 1 (e.g. 0.95), got {confidence!r}."
        )
    return c


def check_rate(limit, name: str = "limit") -> float:
    """An error-rate limit strictly between 0 and 1 (0.001 means 0.1%)."""
    x = check_number(limit, name)
    if not 0.0 < x < 1.0:
        raise InputError(
            f"{name} must be a rate strictly between 0 and 1 (0.001 means 0.1%), got {limit!r}."
        )
    return x


def check_cost(value, name: str) -> float:
    """A finite, non-negative cost per error."""
    v = check_number(value, name)
    if not math.isfinite(v) or v < 0:
        raise InputError(f"{name} must be a finite, non-negative cost per error, got {value!r}.")
    return v


def check_prevalence(value, name: str = "prevalence") -> float:
    """A deployment share of positives strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 < float(value) < 1.0:
        raise InputError(
            f"{name} must be the deployment share of positives, strictly between 0 and 1 "
            f"(0.004 means 0.4%), got {value!r}."
        )
    return float(value)
