"""Terminal tables never lose their keys: at 80, 100 and 120 columns, through the real
command line in a subprocess (the module's console reads COLUMNS when it is imported),
every label, version and verdict appears in full, no line is longer than the terminal
and nothing is cut to an ellipsis."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from calibrate.render import count, figure, percent, timestamp
from calibrate.store import ScoreStore
from tests.parts_fixture import PARTS_POLICY

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (80, 100, 120)
LABELS = ("crack", "dent", "scratch", "spot")


def cli(width: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(width), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "calibrate.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=False)


def assert_fits(stdout: str, width: int) -> None:
    lines = stdout.splitlines()
    too_long = [line for line in lines if len(line) > width]
    assert not too_long, "\n".join(too_long)
    assert "…" not in stdout and "..." not in stdout


@pytest.fixture(scope="module")
def parts_deployed(parts_store, tmp_path_factory):
    _, store = parts_store
    path = tmp_path_factory.mktemp("render") / "thresholds.json"
    proc = cli(120, "thresholds", "--store", store, "--policy", PARTS_POLICY,
               "--model-version", "v1", "--split", "calibration", "-o", path)
    assert proc.returncode == 0, proc.stderr
    return path


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("extra", [[], ["--split", "calibration"]])
def test_thresholds_from_a_store_keep_labels_versions_and_verdicts(parts_store, width, extra):
    _, store = parts_store
    proc = cli(width, "thresholds", "--store", store, "--policy", PARTS_POLICY, *extra)
    assert proc.returncode == 0, proc.stderr
    assert_fits(proc.stdout, width)
    for label in LABELS:
        for version in ("v1", "v2"):
            assert f"{label} {version}" in proc.stdout, (label, version)
    assert "signed off" in proc.stdout  # the verdict of crack, on one line
    if extra:
        assert "on test" in proc.stdout and "not met" in proc.stdout


def test_thresholds_show_four_significant_digits_and_json_stays_exact(parts_store):
    _, store = parts_store
    table = cli(120, "thresholds", "--store", store, "--policy", PARTS_POLICY,
                "--model-version", "v2")
    rows = json.loads(cli(120, "thresholds", "--store", store, "--policy", PARTS_POLICY,
                          "--model-version", "v2", "--format", "json").stdout)["labels"]
    for row in rows:  # a [part] policy: {"labels": rows, "parts": ..., "parts_skipped": ...}
        exact = row["threshold"]
        assert len(repr(exact).lstrip("0.")) > 6  # the file and JSON keep every digit
        line = next(x for x in table.stdout.splitlines() if x.startswith(row["label"] + " "))
        assert f"{exact:.4f}" in line or figure(exact) in line
        assert repr(exact) not in line


def test_a_scores_file_with_long_names_stacks_rather_than_cuts(tmp_path):
    label = "hairline-crack-near-the-weld-seam"
    version = "retrain-2026-12-01-candidate"
    rows = [f"i{i},{label},{0.9 if i % 3 == 0 else 0.2 + i / 1000},{i % 3 == 0},{version}"
            for i in range(60)]
    rows += [f"i{i},dent,{0.8 if i % 2 else 0.1},{i % 2 == 1},{version}" for i in range(60)]
    path = tmp_path / "scores.csv"
    path.write_text("image_id,label,score,truth,model_version\n" + "\n".join(rows) + "\n")
    for width in (*WIDTHS, 60):
        proc = cli(width, "thresholds", path, "--cost-false-accept", "5",
                   "--cost-false-reject", "1")
        assert proc.returncode == 0, proc.stderr
        assert_fits(proc.stdout, width)
        assert f"dent {version}" in proc.stdout
        # Below the width of label and version together they may sit on two lines, whole.
        assert (f"{label} {version}" in proc.stdout if width >= 80
                else re.search(rf"^{label}\n +{version}  threshold", proc.stdout, re.M)), \
            proc.stdout
    narrow = cli(60, "thresholds", path, "--cost-false-accept", "5", "--cost-false-reject", "1")
    assert re.search(rf"^dent {version}  threshold \S+", narrow.stdout, re.M), narrow.stdout


@pytest.mark.parametrize("width", WIDTHS)
def test_check_keeps_labels_and_verdicts(parts_store, parts_deployed, width):
    _, store = parts_store
    proc = cli(width, "check", parts_deployed, "--store", store, "--model-version", "v2",
               "--split", "test")
    assert proc.returncode == 1, proc.stderr
    assert_fits(proc.stdout, width)
    table = proc.stdout.split("Rates: observed")[0]
    for label in LABELS:
        assert re.search(rf"^{label}\b.*\bFAIL\b", table, re.M) or re.search(
            rf"^{label}  FAIL\b", table, re.M), (label, table)
    assert proc.stdout.splitlines()[-1] == "FAILED (exit 1)"


def test_check_stacks_below_the_width_its_table_needs(parts_store, parts_deployed):
    _, store = parts_store
    proc = cli(50, "check", parts_deployed, "--store", store, "--model-version", "v2",
               "--split", "test")
    assert_fits(proc.stdout, 50)
    for label in LABELS:
        assert re.search(rf"^{label}  FAIL  false accept \S+%", proc.stdout, re.M), proc.stdout


@pytest.mark.parametrize("width", WIDTHS)
def test_runs_show_full_ids_iso_times_and_counts(parts_store, width):
    _, store = parts_store
    with ScoreStore(store, read_only=True) as st:
        frame = st.runs()
    proc = cli(width, "runs", "--store", store)
    assert proc.returncode == 0, proc.stderr
    assert_fits(proc.stdout, width)
    for _, run in frame.iterrows():
        assert run["run_id"] in proc.stdout
        assert timestamp(run["started_at"]) in proc.stdout
        assert re.search(rf"\b{count(run['n_scored'])}\b", proc.stdout)
    assert "NaT" not in proc.stdout and "nan" not in proc.stdout
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", proc.stdout)  # no microseconds
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", proc.stdout)


def test_runs_table_says_dash_for_missing_times_and_separates_thousands():
    from calibrate.cli import _runs_table

    frame = pd.DataFrame([{
        "run_id": "0123456789abcdef0123456789abcdef", "detector": "surface-defect",
        "model_version": "v3", "dataset": "parts", "status": "interrupted",
        "n_scored": 2400, "n_failed": 12, "started_at": pd.Timestamp("2026-12-07 03:48:26.7"),
        "finished_at": pd.NaT,
    }])
    for width in (80, 160):
        console = Console(width=width, record=True, color_system=None)
        _runs_table(frame, "Runs").print(console)
        text = console.export_text()
        assert "2,400" in text and "2026-12-07T03:48:26" in text
        assert "0123456789abcdef0123456789abcdef" in text and "interrupted" in text
        assert "NaT" not in text and ".7" not in text
        assert re.search(r"finished\s+-|\s-\s*$", text, re.M), text


@pytest.mark.parametrize("value, shown", [
    (0.9690, "0.9690"), (0.7764508046349065, "0.7765"), (0.0572438, "0.05724"),
    (100.0, "100.0"), (0.0, "0"), (9.99996, "10.00"), (12345.6, "12,346"),
    (2e-7, "2.000e-07"), (None, "-"),
])
def test_figures_have_four_significant_digits(value, shown):
    assert figure(value) == shown


def test_helpers():
    assert figure(0.5, sign=True) == "+0.5000"
    assert percent(0.001) == "0.1000%"
    assert count(2400) == "2,400" and count(None) == "-"
    assert timestamp(pd.NaT) == "-" and timestamp(None) == "-"
