"""The project's error and warning types.

Every error raised on purpose by ``calibrate`` derives from :class:`CalibrateError`, so
scripts can catch the toolkit's own failures without catching programming errors.
Errors about bad input also derive from :class:`ValueError`, so code written against
numpy/scikit-learn conventions keeps working.
"""

from __future__ import annotations

__all__ = ["CalibrateError", "CalibrateWarning", "InputError", "NoRankingInformationWarning"]


class CalibrateError(Exception):
    """Base class of every error ``calibrate`` raises on purpose."""


class InputError(CalibrateError, ValueError):
    """Input data or arguments are invalid; the message says what and how to fix it."""


class CalibrateWarning(UserWarning):
    """Base class of the warnings ``calibrate`` emits."""


class NoRankingInformationWarning(CalibrateWarning):
    """A label's scores are all equal, so no threshold can separate its classes.

    Viam's ``color_detector`` is the classic case: it reports 1.0 for every region it
    finds. A cost-minimal "threshold" on such a label is only the choice between firing
    on everything and firing on nothing, so ``calibrate`` flags it instead of presenting
    it as an optimum.
    """
