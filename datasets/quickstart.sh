#!/usr/bin/env bash
# The README's main job on the bundled parts set: make the data, score it with two
# versions of the built-in detector, and choose per-label cutoffs under the QC policy.
set -euo pipefail
cd "$(dirname "$0")/.."
CAL=${CALIBRATE:-.venv/bin/calibrate}
PY=${PYTHON:-.venv/bin/python}
STORE=${STORE:-calibrate.duckdb}

"$PY" datasets/make_parts.py --out datasets/parts --overwrite
for version in v1 v2; do
  "$CAL" score --dataset datasets/parts/manifest.jsonl --detector surface-defect \
    --model-version "$version" --store "$STORE"
done
"$CAL" thresholds --store "$STORE" --policy datasets/parts-policy.toml --split calibration
