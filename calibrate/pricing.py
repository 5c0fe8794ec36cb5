"""What a scoring run with a cloud detector will cost, estimated before it starts.

Cloud detectors say they cost money with ``billable = True`` and name the API call they
make with ``operation`` (``"DetectFaces"``, ``"DetectImageFaces"``...). The price of each
operation comes from a small TOML table shipped with the package
(``calibrate/prices.toml``), which users can copy, edit and pass as ``price_file``:
prices change, differ by region and have volume tiers, so the table records where each
price came from and when it was checked, and every estimate carries that along.

Examples
--------
>>> est = estimate_cost("DetectFaces", 12_000)
>>> est.total, est.currency
(12.0, 'USD')
>>> print(est.summary())  # doctest: +ELLIPSIS
12,000 calls x DetectFaces at 0.001 USD/call = 12.00 USD (prices.toml, checked on ...)
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibrate.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["DEFAULT_PRICE_FILE", "CostEstimate", "estimate_cost", "load_prices"]

#: The price table shipped with calibrate.
DEFAULT_PRICE_FILE = Path(__file__).with_name("prices.toml")


@dataclass(frozen=True)
class CostEstimate:
    """The estimated cost of ``calls`` calls of one operation.

    Attributes
    ----------
    operation : str
        API operation priced (``""`` for a detector that is not billed).
    calls : int
    price_per_call : float
        In ``currency``; for hourly-priced operations, the hourly price spread over the
        assumed throughput.
    total : float
    currency : str
    source : str
        The price file and the page the price came from.
    checked_on : str
        When the price was last checked against its source.
    rough : bool
        True when the price is not per call (e.g. Custom Labels inference hours), so the
        estimate rests on a throughput assumption.
    note : str
        Caveats from the price table (tiers, extra fees, assumptions).
    """

    operation: str
    calls: int
    price_per_call: float
    total: float
    currency: str
    source: str
    checked_on: str
    rough: bool = False
    note: str = ""

    def summary(self) -> str:
        """One line for a CLI: calls, unit price, total and where the price came from."""
        if not self.operation:
            return f"{self.calls:,} calls of a local detector: no cloud charges."
        approx = "roughly " if self.rough else ""
        where = Path(self.source.split(" ")[0]).name
        return (
            f"{self.calls:,} calls x {self.operation} at {self.price_per_call:.4g} "
            f"{self.currency}/call = {approx}{self.total:,.2f} {self.currency} "
            f"({where}, checked on {self.checked_on}; prices change)"
        )


def load_prices(price_file: str | Path | None = None) -> dict[str, Any]:
    """Read a price table.

    Parameters
    ----------
    price_file : str or Path, optional
        Default: :data:`DEFAULT_PRICE_FILE`.

    Returns
    -------
    dict
        The parsed TOML, with an ``operations`` table.

    Raises
    ------
    InputError
        When the file is missing, not TOML, or has no ``[operations.NAME]`` tables.
    """
    path = Path(price_file) if price_file is not None else DEFAULT_PRICE_FILE
    try:
        with path.open("rb") as fh:
            table = tomllib.load(fh)
    except FileNotFoundError:
        raise InputError(f"price file {path} does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"price file {path} is not valid TOML: {exc}.") from None
    if not isinstance(table.get("operations"), dict) or not table["operations"]:
        raise InputError(
            f"price file {path} has no [operations.NAME] tables; see {DEFAULT_PRICE_FILE} "
            "for the format."
        )
    table["_path"] = str(path)
    return table


def _number(entry: dict, key: str, where: str) -> float:
    value = entry.get(key)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < 0:
        raise InputError(f"{where}: {key} must be a non-negative number, got {value!r}.")
    return float(value)


def estimate_cost(
    detector: Any, n_calls: int, price_file: str | Path | None = None
) -> CostEstimate:
    """Estimate what ``n_calls`` calls of a detector cost.

    Parameters
    ----------
    detector : Detector or str
        A detector (its ``billable`` and ``operation`` attributes are used; one without
        ``billable = True`` costs nothing) or an operation name such as ``"DetectFaces"``.
    n_calls : int
        Calls to price: usually the images not yet in the store, or ``--max-calls``.
        Retries after throttling are not billed by the services priced here, so they
        are not counted.
    price_file : str or Path, optional
        A TOML price table (default: the one shipped with calibrate).

    Returns
    -------
    CostEstimate

    Raises
    ------
    InputError
        If ``n_calls`` is negative or the price table has no usable entry for the
        operation (the message names the file and the table to add).
    """
    if isinstance(n_calls, bool) or not isinstance(n_calls, int) or n_calls < 0:
        raise InputError(f"n_calls must be a whole number >= 0, got {n_calls!r}.")
    if isinstance(detector, str):
        operation = detector
    else:
        if not getattr(detector, "billable", False):
            return CostEstimate("", n_calls, 0.0, 0.0, "USD", "local detector", "", False,
                                "runs on this machine")
        operation = getattr(detector, "operation", None)
        if not operation:
            raise InputError(
                f"detector {getattr(detector, 'name', detector)!r} is billable but names no "
                "operation to price; give it an `operation` attribute."
            )
    table = load_prices(price_file)
    path = table["_path"]
    entry = table["operations"].get(operation)
    if not isinstance(entry, dict):
        known = ", ".join(sorted(table["operations"]))
        raise InputError(
            f"price file {path} has no price for {operation!r} (it has: {known}). Add an "
            f"[operations.{operation}] table with price_per_1000, and source and checked_on."
        )
    where = f"{path} [operations.{operation}]"
    currency = str(entry.get("currency") or table.get("currency") or "USD")
    checked_on = str(entry.get("checked_on") or table.get("checked_on") or "unknown")
    source = f"{path} ({entry['source']})" if entry.get("source") else path
    note = str(entry.get("note") or table.get("note") or "")
    if "price_per_1000" in entry:
        per_call = _number(entry, "price_per_1000", where) / 1000.0
        rough = bool(entry.get("rough", False))
    elif "price_per_inference_hour" in entry:
        hourly = _number(entry, "price_per_inference_hour", where)
        rate = _number(entry, "images_per_inference_hour", where)
        if rate <= 0:
            raise InputError(f"{where}: images_per_inference_hour must be positive.")
        per_call = hourly / rate
        rough = True
    else:
        raise InputError(
            f"{where} needs price_per_1000, or price_per_inference_hour with "
            "images_per_inference_hour."
        )
    return CostEstimate(
        operation=operation,
        calls=n_calls,
        price_per_call=per_call,
        total=round(per_call * n_calls, 6),
        currency=currency,
        source=source,
        checked_on=checked_on,
        rough=rough,
        note=note,
    )
