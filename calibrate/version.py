"""The toolkit's version, in a module of its own so that any layer can stamp it on what
it writes without importing the package facade (:mod:`calibrate`) and the whole API."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
