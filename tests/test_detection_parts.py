"""Done-when of issue 15: on the parts set with boxes, `calibrate thresholds --policy P`
with unit = "detection" for a label gives per-detection counts equal to pycocotools'
matching at IoU 0.5, at the chosen threshold and at every other one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calibrate import workflow
from calibrate.policy import load_policy_file
from calibrate.store import ScoreStore
from tests.detection_scenes import coco_reference

pytestmark = pytest.mark.filterwarnings("ignore::calibrate.store.DatasetOverlapWarning")

ROOT = Path(__file__).resolve().parents[1]
LABEL = "scratch"


def _reference(store, version):
    """pycocotools on the stored detections and boxes of every label: per detection of
    LABEL, its score and whether it is a true / false detection; and the object count."""
    rows = store.detection_rows("surface-defect", version)
    index = {img: k for k, img in enumerate(rows.image_ids)}
    labels = sorted(set(rows.detections["label"]) | set(rows.objects["label"]))
    det = [(index[r.image_id], r.label, r.score, (r.x_min, r.y_min, r.x_max, r.y_max))
           for r in rows.detections.itertuples(index=False)]
    obj = [(index[r.image_id], r.label, (r.x_min, r.y_min, r.x_max, r.y_max), bool(r.ignore))
           for r in rows.objects.itertuples(index=False)]
    matched, ignored, _ = coco_reference(len(index), det, obj, 0.5, labels)
    mine = np.array([d[1] == LABEL for d in det], dtype=bool)
    scores = np.array([d[2] for d in det])
    n_obj = sum(1 for o in obj if o[1] == LABEL and not o[3])
    return scores[mine], matched[mine], (~matched & ~ignored)[mine], n_obj, rows.n_images


def _coco_counts(ref, threshold):
    scores, true, false, n_obj, _ = ref
    keep = scores >= threshold
    tp = int(np.sum(keep & true))
    return tp, int(np.sum(keep & false)), n_obj - tp


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    p = tmp_path_factory.mktemp("policy") / "policy.toml"
    p.write_text('[defaults]\ncost_false_accept = 10\ncost_false_reject = 1\n\n'
                 f'[labels.{LABEL}]\nunit = "detection"\niou_threshold = 0.5\n')
    return p


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_cli_counts_equal_pycocotools_at_every_threshold(parts_store, policy, version):
    _, store_path = parts_store
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    proc = subprocess.run(
        [sys.executable, "-m", "calibrate.cli", "thresholds", "--store", str(store_path),
         "--policy", str(policy), "--model-version", version, "--label", LABEL,
         "--format", "json"],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["unit"] == "detection" and row["iou_threshold"] == 0.5
    with ScoreStore(store_path, read_only=True) as store:
        ref = _reference(store, version)
    outcome = workflow.choose_from_store(store_path, load_policy_file(policy),
                                         model_version=version, labels=[LABEL])
    threshold = float(row["threshold"])
    assert (row["true_detections"], row["false_detections"], row["missed_objects"]) == \
        _coco_counts(ref, threshold)
    assert row["n_images"] == ref[4] and row["n_objects"] == ref[3]
    assert ref[3] > 20 and ref[0].size > 50  # the parts set really has boxes of the label
    # every other threshold, on the curve the CLI chose from
    (result,) = outcome.results
    curve = result.curve
    for t in [np.inf, *np.unique(ref[0])[::-1]]:
        fp, fn = curve.counts_at(t)
        tp, false, missed = _coco_counts(ref, t)
        assert (fp, fn) == (false, missed), t
        assert curve.n_positive - fn == tp
