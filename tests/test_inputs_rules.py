"""One rule per input question, whatever the file format.

* An empty score is "no result"; a NaN score is an error, in CSV and Parquet alike (it
  used to be "no result" in Parquet and an error in CSV).
* A byte that is not UTF-8 is reported with its file and line (it used to name an
  offset into an internal read block).
* A split used by one image only that looks like a typo of a real split is warned
  about, naming the image and the split it probably meant (it used to be accepted
  silently).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from calibrate.errors import CalibrateWarning, InputError
from calibrate.manifest import read_manifest
from calibrate.scores_table import read_scores_table
from tests.test_manifest import write_image, write_jsonl

def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


# -- NaN and empty scores: one rule for CSV and Parquet ----------------------------------


def _parquet(path, scores, score_type=pa.float64()):
    ids = [f"i{k}" for k in range(len(scores))]
    pq.write_table(pa.table({
        "image_id": ids,
        "label": ["scratch"] * len(scores),
        "score": pa.array(scores, score_type),
        "truth": [k == 0 for k in range(len(scores))],
    }), path)
    return path


def _csv(path, score_cells):
    lines = ["image_id,label,score,truth"]
    lines += [f"i{k},scratch,{cell},{'true' if k == 0 else 'false'}"
              for k, cell in enumerate(score_cells)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_empty_is_no_result_in_both_formats(tmp_path):
    a = read_scores_table(_csv(tmp_path / "s.csv", ["0.9", "", "0.2"]))
    b = read_scores_table(_parquet(tmp_path / "s.parquet", [0.9, None, 0.2]))
    pd.testing.assert_frame_equal(a, b)
    assert np.isneginf(a["score"]).tolist() == [False, True, False]


@pytest.mark.parametrize("cell", ["nan", "NaN", " NAN "])
def test_nan_is_an_error_in_csv(tmp_path, cell):
    with pytest.raises(InputError) as exc:
        read_scores_table(_csv(tmp_path / "s.csv", ["0.9", cell, "0.2"]))
    assert _one_line(exc).startswith(f"{tmp_path / 's.csv'}:3: score is NaN")
    assert "Re-score the image or remove its rows" in str(exc.value)


@pytest.mark.parametrize("score_type", [pa.float64(), pa.float32()])
def test_nan_is_an_error_in_parquet_as_in_csv(tmp_path, score_type):
    # A NaN *value* (as polars, Spark or pyarrow write it) is not a null: it used to
    # become "no result" here while the same NaN in a CSV was an error.
    path = _parquet(tmp_path / "s.parquet", [0.9, 0.5, float("nan")], score_type)
    with pytest.raises(InputError) as exc:
        read_scores_table(path)
    assert _one_line(exc).startswith(f"{path} row 3: score is NaN")


def test_nan_text_in_a_parquet_string_column_is_an_error_too(tmp_path):
    path = _parquet(tmp_path / "s.parquet", ["0.9", None, "NaN"], pa.string())
    with pytest.raises(InputError, match=r"row 3: score is NaN"):
        read_scores_table(path)
    ok = read_scores_table(_parquet(tmp_path / "t.parquet", ["0.9", None, "0.1"], pa.string()))
    assert np.isneginf(ok["score"]).tolist() == [False, True, False]


def test_minus_inf_is_no_result_and_plus_inf_an_error_in_both(tmp_path):
    a = read_scores_table(_csv(tmp_path / "s.csv", ["0.9", "-inf", "0.2"]))
    b = read_scores_table(_parquet(tmp_path / "s.parquet", [0.9, -np.inf, 0.2]))
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(InputError, match=r"s2\.csv:4: score is \+inf"):
        read_scores_table(_csv(tmp_path / "s2.csv", ["0.9", "0.1", "inf"]))
    with pytest.raises(InputError, match=r"s2\.parquet row 3: score is \+inf"):
        read_scores_table(_parquet(tmp_path / "s2.parquet", [0.9, 0.1, np.inf]))


# -- bytes that are not UTF-8: file and line --------------------------------------------


def _latin1_csv(path, lines: list[str], bad_line: int, prefix: str):
    """Lines as UTF-8, but ``bad_line`` (1-based) holds a Latin-1 'é' after ``prefix``."""
    data = [ln.encode("utf-8") for ln in lines]
    data[bad_line - 1] = prefix.encode() + b"\xe9" + data[bad_line - 1][len(prefix):]
    path.write_bytes(b"\n".join(data) + b"\n")
    return path


def test_undecodable_byte_in_a_csv_manifest_names_file_and_line(tmp_path):
    rows = [f"img{k}.png,scratch" for k in range(5000)]  # beyond one read block
    path = _latin1_csv(tmp_path / "m.csv", ["image,labels", *rows], 4001, "img3999")
    with pytest.raises(InputError) as exc:
        read_manifest(path)
    assert _one_line(exc) == (
        f"{path}, line 4001: byte 0xe9 at column 8 is not UTF-8 text. Save the manifest "
        "as UTF-8 (in Excel: CSV UTF-8), or fix that character."
    )


def test_undecodable_byte_in_jsonl_and_coco_manifests_names_the_line(tmp_path):
    rows = [json.dumps({"image": f"{k}.png", "labels": []}) for k in range(3)]
    path = _latin1_csv(tmp_path / "m.jsonl", rows, 2, '{"im')
    with pytest.raises(InputError, match=r"m\.jsonl, line 2: byte 0xe9 at column 5"):
        read_manifest(path)
    coco = tmp_path / "c.json"
    coco.write_bytes(b'{"images": [],\n "categories": [{"id": 1, "name": "caf\xe9"}]}\n')
    with pytest.raises(InputError, match=r"c\.json, line 2: byte 0xe9 at column 39"):
        read_manifest(coco)


def test_undecodable_byte_in_a_scores_csv_names_file_and_line(tmp_path):
    lines = ["image_id,label,score,truth"] + [f"i{k},scratch,0.5,false" for k in range(3000)]
    path = _latin1_csv(tmp_path / "s.csv", lines, 2500, "i2498,scr")
    with pytest.raises(InputError) as exc:
        read_scores_table(path)
    assert _one_line(exc).startswith(f"{path}:2500: byte 0xe9 at column 10 is not UTF-8")


# -- a split on one image that looks like a typo ----------------------------------------


def _split_set(tmp_path, splits):
    rows = []
    for k, split in enumerate(splits):
        write_image(tmp_path / f"{k}.png", seed=k)
        rows.append({"id": f"p{k}", "image": f"{k}.png", "labels": [], "split": split})
    return write_jsonl(tmp_path / "m.jsonl", rows)


@pytest.mark.parametrize("typo", ["calbration", "Calibration", "calibraton"])
def test_a_lone_split_like_another_is_warned_about(tmp_path, typo):
    path = _split_set(tmp_path, ["calibration"] * 3 + [typo] + ["test"] * 2)
    with pytest.warns(CalibrateWarning) as record:
        s = read_manifest(path)
    assert [str(w.message) for w in record] == [
        f"{path}:4: image 'p3' is the only one with split {typo!r}; did you mean "
        "'calibration', which 3 images use? Correct the split, or ignore this if the "
        "image really is alone in it."
    ]
    assert record[0].filename == __file__  # points at the caller, not at calibrate
    assert s.images[3].split == typo  # warned about, not changed


def test_lone_splits_unlike_any_other_and_tiny_sets_are_left_alone(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_manifest(_split_set(tmp_path / "a", ["calibration", "calibration", "holdout"]))
        read_manifest(_split_set(tmp_path / "b", ["cal", "test", "cal"]))
        read_manifest(_split_set(tmp_path / "c", ["calibration", "calbration"]))  # 1 each
        read_manifest(_split_set(tmp_path / "d", ["test", "test", None]))


def test_the_column_counts_characters_not_bytes(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes("image,labels\nkäse.png,\xe9\n".encode("utf-8").replace(b"\xc3\xa9", b"\xe9"))
    with pytest.raises(InputError, match=r"m\.csv, line 2: byte 0xe9 at column 10 is not"):
        read_manifest(path)
