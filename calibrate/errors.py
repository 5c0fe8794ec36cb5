"""The project's error and warning types.

Every error raised on purpose by ``calibrate`` derives from :class:`CalibrateError`, so
scripts can catch the toolkit's own failures without catching programming errors.
Errors about bad input also derive from :class:`ValueError`, so code written against
numpy/scikit-learn conventions keeps working.
"""

from __future__ import annotations

__all__ = [
    "CalibrateError",
    "CalibrateWarning",
    "InputError",
    "NoRankingInformationWarning",
    "OutputError",
]


class CalibrateError(Exception):
    """Base class of every error ``calibrate`` raises on purpose."""


class InputError(CalibrateError, ValueError):
    """Input data or arguments are invalid; the message says what and how to fix it."""


class OutputError(InputError, OSError):
    """A file or folder cannot be written; the message names it and the reason.

    An :class:`InputError` because the cure is the user's (another path, the folder's
    permissions), and so the command line exits 2, never 1 (which ``check`` uses for a
    failed gate); also an :class:`OSError`, so code that caught the file system's own
    error keeps working.
    """

    @classmethod
    def from_os_error(cls, path, exc: OSError) -> OutputError:
        """The one-line error for an ``OSError`` raised while writing ``path``."""
        # The reason only: exc.filename is often calibrate's own temp file, which
        # means nothing to the user.
        reason = exc.strerror or str(exc) or type(exc).__name__
        return cls(f"cannot write {path}: {reason}. Choose another path or make its "
                   "folder writable.")


class CalibrateWarning(UserWarning):
    """Base class of the warnings ``calibrate`` emits."""


class NoRankingInformationWarning(CalibrateWarning):
    """A label's scores are all equal, so no threshold can separate its classes.

    Viam's ``color_detector`` is the classic case: it reports 1.0 for every region it
    finds. A cost-minimal "threshold" on such a label is only the choice between firing
    on everything and firing on nothing, so ``calibrate`` flags it instead of presenting
    it as an optimum.
    """
