"""Importing COCO detection results with their COCO ground truth: files written by a
small generator (as a framework would write them), imported through the CLI, and
checked in the stored rows, the image-level scores and ``detection_rows``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calibrate.cli import app
from calibrate.coco_results import read_coco_results
from calibrate.detectors.precomputed import import_coco_results
from calibrate.errors import InputError
from calibrate.manifest import read_coco_ground_truth
from calibrate.store import ScoreStore

runner = CliRunner()

CATEGORIES = [{"id": 1, "name": "scratch"}, {"id": 2, "name": "dent"}, {"id": 7, "name": "spot"}]


def write_coco(folder: Path, seed: int = 0, n_images: int = 40) -> tuple[Path, Path, dict]:
    """A ground-truth file and a results file as a detection framework writes them.

    Images of random sizes (their files are not on this machine), 0-3 objects each
    (some crowd), and detections near the objects plus stray ones, with ties in score.
    Returns (ground truth, results, what was written) for the checks.
    """
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for i in range(n_images):
        coco_id = 100 + 3 * i  # COCO ids are anything, never positions
        w, h = int(rng.integers(100, 640)), int(rng.integers(100, 480))
        images.append({"id": coco_id, "file_name": f"frames/f{i:03d}.jpg", "width": w,
                       "height": h})
        for _ in range(int(rng.integers(0, 4))):
            bw, bh = rng.uniform(5, w / 3), rng.uniform(5, h / 3)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            cat = int(rng.choice([1, 2, 7]))
            annotations.append({"id": len(annotations) + 1, "image_id": coco_id,
                                "category_id": cat, "bbox": [x, y, bw, bh],
                                "area": bw * bh, "iscrowd": int(rng.uniform() < 0.1)})
            if rng.uniform() < 0.8:  # found, with a jittered box
                results.append({"image_id": coco_id, "category_id": cat,
                                "bbox": [x + rng.normal(0, 2), y + rng.normal(0, 2), bw, bh],
                                "score": round(float(rng.uniform(0.3, 1.0)), 2)})
        for _ in range(int(rng.integers(0, 3))):  # false detections, scores with ties
            results.append({"image_id": coco_id, "category_id": int(rng.choice([1, 2, 7])),
                            "bbox": [float(rng.uniform(0, w / 2)), float(rng.uniform(0, h / 2)),
                                     20.0, 10.0],
                            "score": round(float(rng.uniform(0.05, 0.6)), 1)})
    gt = folder / "instances_val.json"
    gt.write_text(json.dumps({"images": images, "annotations": annotations,
                              "categories": CATEGORIES}))
    res = folder / "detections_val_results.json"
    res.write_text(json.dumps(results))
    return gt, res, {"images": images, "annotations": annotations, "results": results}


def test_coco_results_import_end_to_end(tmp_path):
    gt, res, written = write_coco(tmp_path)
    store_path = tmp_path / "s.duckdb"
    out = runner.invoke(app, ["import-scores", str(res), "--ground-truth", str(gt), "--store",
                              str(store_path), "--detector", "yolo", "--model-version", "v8n"])
    assert out.exit_code == 0, out.output
    names = {c["id"]: c["name"] for c in CATEGORIES}
    file_of = {im["id"]: im["file_name"] for im in written["images"]}
    with ScoreStore(store_path, read_only=True) as store:
        run = store.runs().iloc[0]
        assert (run["detector"], run["model_version"], run["dataset"], run["status"]) == (
            "yolo", "v8n", "instances_val", "finished")
        assert run["n_scored"] == 40 and run["n_failed"] == 0
        # Every detection stored once, in pixels, x_max = x + width.
        stored = sorted(store._db().execute(
            "SELECT image_id, label, score, x_min, y_min, x_max, y_max, box_unit "
            "FROM result_rows").fetchall())
        want = sorted((file_of[r["image_id"]], names[r["category_id"]], r["score"],
                       r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2],
                       r["bbox"][1] + r["bbox"][3], "pixel") for r in written["results"])
        assert stored == want
        # Image level: the highest detection per image and label, -inf for none.
        for label_id, label in names.items():
            ls = store.scores("yolo", "v8n", label)
            assert len(ls) == 40
            for image_id, score, positive in zip(ls.image_ids, ls.scores, ls.positive):
                mine = [r["score"] for r in written["results"]
                        if file_of[r["image_id"]] == image_id and r["category_id"] == label_id]
                assert score == (max(mine) if mine else -np.inf)
                assert positive == any(file_of[a["image_id"]] == image_id
                                       and a["category_id"] == label_id
                                       for a in written["annotations"])
        # Detection level: the same detections and the ground truth's objects.
        rows = store.detection_rows("yolo", "v8n")
        assert rows.n_images == 40 and rows.n_failed == 0
        assert sorted(map(tuple, rows.detections.values.tolist())) == sorted(w[:7] for w in want)
        objects = sorted(map(tuple, rows.objects.values.tolist()))
        assert objects == sorted(
            (file_of[a["image_id"]], names[a["category_id"]], a["bbox"][0], a["bbox"][1],
             a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3], bool(a["iscrowd"]))
            for a in written["annotations"])
        sizes = dict(store._db().execute("SELECT image_id, width FROM images").fetchall())
        assert sizes == {im["file_name"]: im["width"] for im in written["images"]}
    # The same files again add nothing; another version joins the same dataset.
    again = runner.invoke(app, ["import-scores", str(res), "--ground-truth", str(gt), "--store",
                                str(store_path), "--detector", "yolo", "--model-version", "v8n"])
    assert again.exit_code == 0
    with ScoreStore(store_path) as store:
        assert len(store.runs()) == 1
        import_coco_results(store, res, gt, detector="yolo", model_version="v8s")
        assert store.version_datasets("yolo", "v8s") == ["instances_val"]
        assert store.detection_rows("yolo", "v8s").n_images == 40


def test_an_empty_results_array_scores_every_image_with_no_result(tmp_path):
    gt, res, _ = write_coco(tmp_path, n_images=5)
    res.write_text("[]")
    with ScoreStore(tmp_path / "s.duckdb") as store:
        import_coco_results(store, res, gt, model_version="v1")
        ls = store.scores("precomputed", "v1", "dent")
        assert len(ls) == 5 and np.all(np.isneginf(ls.scores))
        assert store.detection_rows("precomputed", "v1").detections.empty


@pytest.mark.parametrize("entry, match", [
    ({"image_id": 999, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5},
     r"\[1\].image_id: 999 is not an image of the ground truth"),
    ({"image_id": 100, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5},
     r"\[1\].category_id: 3 is not a category"),
    ({"image_id": 100, "category_id": 1, "bbox": [1, 2, -3, 4], "score": 0.5},
     r"\[1\].bbox: must be 4 finite numbers"),
    ({"image_id": 100, "category_id": 1, "bbox": [1, 2, 3], "score": 0.5}, r"\[1\].bbox"),
    ({"image_id": 100, "category_id": 1, "bbox": [1, 2, 3, 4], "score": "high"},
     r"\[1\].score: must be a finite number, got 'high'"),
    ({"image_id": 100, "category_id": 1, "bbox": [1, 2, 3, 4], "score": float("nan")},
     r"\[1\].score"),
    ({"image_id": 100, "category_id": 1, "bbox": [1, 2, 3, 4]}, r"\[1\]: no 'score'"),
    ("oops", r"\[1\]: expected an object"),
])
def test_results_errors_name_file_and_index(tmp_path, entry, match):
    gt, res, _ = write_coco(tmp_path, n_images=3)
    good = {"image_id": 100, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}
    res.write_text(json.dumps([good, entry, entry], allow_nan=True))
    with pytest.raises(InputError, match=match) as info:
        read_coco_results(res, read_coco_ground_truth(gt))
    message = str(info.value)
    assert message.startswith(f"{res}[1]") and "1 more problem" in message
    assert "\n" not in message
    store = tmp_path / "s.duckdb"
    out = runner.invoke(app, ["import-scores", str(res), "--ground-truth", str(gt), "--store",
                              str(store)])
    assert out.exit_code == 2 and "Traceback" not in out.output
    with ScoreStore(store, read_only=True) as st:
        assert st.runs().empty  # nothing imported


def test_wrong_files_and_options_are_refused(tmp_path):
    gt, res, _ = write_coco(tmp_path, n_images=3)
    with pytest.raises(InputError, match=r"is a COCO annotation file, not COCO detection "
                                         r"results"):
        read_coco_results(gt, read_coco_ground_truth(gt))
    with pytest.raises(InputError, match=r'no "annotations" list'):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"images": [], "categories": []}))
        read_coco_ground_truth(bad)
    out = runner.invoke(app, ["import-scores", str(res), "--store", str(tmp_path / "s.duckdb")])
    assert out.exit_code == 2 and "needs --ground-truth" in out.output
    csv = tmp_path / "scores.csv"
    csv.write_text("image_id,label,score,truth\na,scratch,0.5,1\n")
    out = runner.invoke(app, ["import-scores", str(csv), "--ground-truth", str(gt), "--store",
                              str(tmp_path / "s.duckdb")])
    assert out.exit_code == 2 and "--ground-truth goes with a COCO results .json" in out.output
    # A ground-truth box outside its image is named with its annotation.
    data = json.loads(gt.read_text())
    data["annotations"].append({"id": 999, "image_id": 100, "category_id": 1,
                                "bbox": [0, 0, 5000, 10]})
    gt.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"annotations\[\d+\].bbox: box .* lies outside"):
        read_coco_ground_truth(gt)
