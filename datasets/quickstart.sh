#!/usr/bin/env bash
# The README's main job on the bundled parts set: make the data, then run the study
# (score with two versions of the built-in detector, choose per-label cutoffs under the
# QC policy, write the thresholds file, a Viam config fragment and the HTML report),
# and print the thresholds table.
set -euo pipefail
cd "$(dirname "$0")/.."
CAL=${CALIBRATE:-.venv/bin/calibrate}
PY=${PYTHON:-.venv/bin/python}

"$PY" datasets/make_parts.py --out datasets/parts --overwrite
"$CAL" run datasets/parts-study.toml
"$CAL" thresholds --store calibrate.duckdb --policy datasets/parts-policy.toml --split calibration
