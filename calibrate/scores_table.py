"""Tables of precomputed scores: detector results produced elsewhere, read for calibration.

A scores table (CSV or Parquet) has one row per result: ``image_id``, ``label``,
``score`` and ``truth``, optionally ``detector`` and ``model_version``. It is not a
manifest: it holds scores and ground truth, not images. :func:`read_scores_table` reduces
it to image-level rows, the input of the precomputed detector.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from calibrate.errors import InputError
from calibrate.io import first_undecodable

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SCORES_TABLE_COLUMNS", "read_scores_table"]

_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n"}
SCORES_TABLE_COLUMNS = ("image_id", "label", "score", "truth")
_KEYS = ["detector", "model_version", "label", "image_id"]

# pandas is imported inside the functions that use it: importing calibrate.manifest
# (which re-exports read_scores_table) should not pay pandas' start-up time.


def read_scores_table(path, *, detector: str = "precomputed", model_version: str | None = None):
    """Read a table of scores produced elsewhere (CSV or Parquet), one row per result.

    Columns: ``image_id``, ``label``, ``score``, ``truth`` (whether the label is really
    present: true/false, 1/0, yes/no), and optionally ``detector`` and
    ``model_version``. Several rows for the same image and label (one per box) are
    reduced to the image-level score, their maximum.

    One rule for scores in both formats: an *empty* score (an empty CSV cell, a Parquet
    null) means "no result on this image" and becomes ``-inf``, which ranks below every
    real score; ``-inf`` itself means the same. A *NaN* score (the text ``nan`` in any
    case in CSV, a NaN value in Parquet) is an error: a detector that returned NaN
    failed on that image, and counting a failure as "no result" would move the curves.
    Re-score such images, or remove their rows. ``+inf`` and text that is not a number
    are errors too.

    Parameters
    ----------
    path : str or Path
        A ``.csv`` or ``.parquet`` file.
    detector : str, default "precomputed"
        Used where the table has no ``detector`` column.
    model_version : str, optional
        Used where the table has no ``model_version`` column; "unknown" if neither.

    Returns
    -------
    pandas.DataFrame
        Image-level rows with columns ``detector, model_version, label, image_id,
        score, positive``.

    Raises
    ------
    InputError
        Naming the file, the line (CSV: the line number in the file; Parquet: the row)
        and what to fix.
    """
    p = Path(path)
    raw, where, nan = _read_raw(p)
    _check_columns(p, raw)
    scores = _scores(raw, where, nan)
    positive = _truth(raw, where)
    _check_keys_not_blank(raw, where)
    frame = _result_rows(raw, scores, positive, detector, model_version)
    _check_no_contradiction(frame, where)
    out = frame.groupby(_KEYS, sort=True, as_index=False).agg(
        score=("score", "max"), positive=("positive", "first")
    )
    return out[["detector", "model_version", "label", "image_id", "score", "positive"]]


def _read_raw(p: Path) -> tuple[pd.DataFrame, list[str], np.ndarray]:
    """The table as read, where each row is in the file (for messages), and which
    scores are a NaN value rather than empty (Parquet only: a CSV's text says so)."""
    import pandas as pd

    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            raw = pd.read_csv(p, dtype=str, keep_default_na=False)
            where = [f"{p}:{i + 2}" for i in range(len(raw))]  # line 1 is the header
            nan = np.zeros(len(raw), dtype=bool)
        elif suffix in (".parquet", ".pq"):
            raw, nan = _read_parquet(p)
            where = [f"{p} row {i + 1}" for i in range(len(raw))]
        else:
            raise InputError(
                f"{p}: unknown scores table format {suffix or '(no suffix)'}; use .csv or .parquet."
            )
    except FileNotFoundError:
        raise InputError(f"scores table {p} does not exist.") from None
    except UnicodeDecodeError as exc:
        if suffix != ".csv":
            raise InputError(f"cannot read scores table {p}: {exc}") from None
        raise _not_utf8(p, exc) from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"cannot read scores table {p}: {exc}") from None
    return raw, where, nan


def _read_parquet(p: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """A Parquet table and which of its scores are NaN values.

    pandas turns a null into NaN, so the two are told apart here, on the Arrow column,
    before the conversion: a null is "no result", a NaN a failed score.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(p)
    nan = np.zeros(table.num_rows, dtype=bool)
    if "score" in table.column_names and pa.types.is_floating(table.column("score").type):
        is_nan = pc.fill_null(pc.is_nan(table.column("score")), False)
        nan = is_nan.to_numpy(zero_copy_only=False).astype(bool)
    return table.to_pandas(), nan


def _not_utf8(p: Path, exc: UnicodeDecodeError) -> InputError:
    """The error for a CSV that is not UTF-8, naming the line of the first bad byte."""
    where = first_undecodable(p)
    if where is None:  # pragma: no cover - the file changed since pandas read it
        return InputError(f"{p}: not UTF-8 text ({exc.reason}). Save the table as UTF-8.")
    line, column, byte = where
    return InputError(
        f"{p}:{line}: byte 0x{byte:02x} at column {column} is not UTF-8 text. "
        "Save the table as UTF-8 (in Excel: CSV UTF-8), or fix that character."
    )


def _check_columns(p: Path, raw: pd.DataFrame) -> None:
    missing = [c for c in SCORES_TABLE_COLUMNS if c not in raw.columns]
    if missing:
        raise InputError(
            f"{p}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, raw.columns))}. "
            f"A scores table needs {', '.join(SCORES_TABLE_COLUMNS)} "
            "(optional: detector, model_version)."
        )
    if len(raw) == 0:
        raise InputError(f"{p}: the scores table has no rows.")


def _scores(raw: pd.DataFrame, where: list[str], nan: np.ndarray) -> np.ndarray:
    """The ``score`` column as floats: empty ("no result") is ``-inf``, NaN an error.

    ``nan`` marks the scores known to be NaN values (Parquet), which pandas can no
    longer tell from nulls.
    """
    import pandas as pd

    col = raw["score"]
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    if numeric:
        num = pd.to_numeric(col, errors="coerce").to_numpy(np.float64)
        empty = col.isna().to_numpy() & ~nan
    else:
        text = col.astype(str).str.strip()
        empty = ((text == "") | col.isna()).to_numpy()
        nan = nan | text.str.lower().isin({"nan", "+nan", "-nan"}).to_numpy()
        num = pd.to_numeric(text.where(~empty, "nan"), errors="coerce").to_numpy(np.float64)
    nan = nan & ~empty
    bad = np.isnan(num) & ~empty & ~nan
    _refuse_first(nan, where, "score is NaN, which means the detector failed on that "
                  "image, not that it found nothing. Re-score the image or remove its "
                  "rows; leave a score empty (CSV) or null (Parquet) only for no result.")
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{where[i]}: score {col.iloc[i]!r} is not a number. Leave the cell "
            "empty when the detector returned nothing for the label on that image."
        )
    _refuse_first(np.isposinf(num), where, "score is +inf; scores must be finite.")
    return np.where(empty, -np.inf, num)


def _refuse_first(mask: np.ndarray, where: list[str], message: str) -> None:
    """Raise ``message`` at the first row ``mask`` marks, if any."""
    if mask.any():
        raise InputError(f"{where[int(np.flatnonzero(mask)[0])]}: {message}")


def _truth(raw: pd.DataFrame, where: list[str]) -> np.ndarray:
    """The ``truth`` column as booleans."""
    import pandas as pd

    truth_raw = raw["truth"]
    if pd.api.types.is_bool_dtype(truth_raw):
        return truth_raw.to_numpy(bool)
    t = truth_raw.astype(str).str.strip().str.lower()
    is_true, is_false = t.isin(_TRUE).to_numpy(), t.isin(_FALSE).to_numpy()
    if not (is_true | is_false).all():
        i = int(np.flatnonzero(~(is_true | is_false))[0])
        raise InputError(
            f"{where[i]}: truth {truth_raw.iloc[i]!r} is not true/false (also accepted: "
            "1/0, yes/no). It says whether the label is really present on the image."
        )
    return is_true


def _check_keys_not_blank(raw: pd.DataFrame, where: list[str]) -> None:
    for c in ("image_id", "label"):
        blank = raw[c].isna().to_numpy() | (raw[c].astype(str).str.strip() == "").to_numpy()
        if blank.any():
            i = int(np.flatnonzero(blank)[0])
            raise InputError(f"{where[i]}: {c} is empty.")


def _result_rows(
    raw: pd.DataFrame,
    scores: np.ndarray,
    positive: np.ndarray,
    detector: str,
    model_version: str | None,
) -> pd.DataFrame:
    """One row per result, with the defaults filled in; ``line`` keeps the row order."""
    import pandas as pd

    def text_col(name, default):
        if name in raw.columns:
            return raw[name].astype(str).replace("", default).to_numpy()
        return np.full(len(raw), default, dtype=object)

    return pd.DataFrame(
        {
            "detector": text_col("detector", detector),
            "model_version": text_col("model_version", model_version or "unknown"),
            "label": raw["label"].astype(str).to_numpy(),
            "image_id": raw["image_id"].astype(str).to_numpy(),
            "score": scores,
            "positive": positive,
            "line": np.arange(len(raw)),
        }
    )


def _check_no_contradiction(frame: pd.DataFrame, where: list[str]) -> None:
    # Rows of one image and label (one per box) are merged into one result; they must
    # agree on the truth, or the merged row would take whichever came first.
    conflict = frame.groupby(_KEYS, sort=False)["positive"].transform("nunique") > 1
    if not conflict.any():
        return
    i = int(np.flatnonzero(conflict.to_numpy())[0])
    r = frame.iloc[i]
    others = frame.index[
        (frame[_KEYS] == r[_KEYS]).all(axis=1) & (frame["positive"] != r["positive"])
    ]
    raise InputError(
        f"{where[i]} and {where[int(others[0])]}: image {r['image_id']!r} has contradicting "
        f"truth for label {r['label']!r}. Fix the ground truth so each image and label "
        "has one answer."
    )
