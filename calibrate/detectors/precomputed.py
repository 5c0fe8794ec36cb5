"""Precomputed scores: results produced elsewhere (a Viam machine's logs, a notebook)
imported into the store as runs, so every later step treats them like any other run."""

from __future__ import annotations

import hashlib
from pathlib import Path

from calibrate.coco_results import read_coco_results
from calibrate.manifest import (
    LabeledImage,
    dataset_fingerprint,
    read_coco_ground_truth,
    read_scores_table,
)

__all__ = ["import_coco_results", "import_scores"]


def import_scores(
    store,
    path,
    *,
    dataset: str | None = None,
    detector: str = "precomputed",
    model_version: str | None = None,
) -> list[str]:
    """Import a scores table (CSV or Parquet) into the store, one run per model version.

    The table's ``truth`` column becomes the images' ground truth; ``image_id`` is both
    the id and, lacking a path, the image's URI. See
    :func:`calibrate.manifest.read_scores_table` for the columns.

    Parameters
    ----------
    store : calibrate.store.ScoreStore
    path : str or Path
    dataset : str, optional
        Dataset name in the store; default: the file's stem.
    detector : str, default "precomputed"
        Detector name where the table has no ``detector`` column.
    model_version : str, optional
        Model version where the table has no ``model_version`` column.

    Returns
    -------
    list of str
        The new run ids. Importing the same file again adds nothing: a run of the same
        detector, version and data is found and its images are already done.
    """
    frame = read_scores_table(path, detector=detector, model_version=model_version)
    name = dataset or Path(path).stem
    truth = frame[frame["positive"]].groupby("image_id")["label"].agg(frozenset)
    ids = sorted(frame["image_id"].unique())
    images = [
        LabeledImage(image_id=i, uri=i, labels=truth.get(i, frozenset()), source=str(path))
        for i in ids
    ]
    store.add_images(name, images)
    run_ids = []
    for (det, ver), g in frame.groupby(["detector", "model_version"], sort=True):
        subset = set(g["image_id"])
        # The scores are the content here: a corrected file must become a new run (the
        # latest run wins per image), while the same file again finds its run.
        rows = g.sort_values(["image_id", "label"])[["image_id", "label", "score"]]
        digest = hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()
        fingerprint = (
            dataset_fingerprint(im for im in images if im.image_id in subset) + ";scores:" + digest
        )
        run = store.find_run(det, ver, fingerprint, name)
        if run is None:
            run_id = store.begin_run(
                detector=det,
                model_version=ver,
                dataset=name,
                dataset_fingerprint=fingerprint,
                settings={"imported_from": str(Path(path).resolve())},
                labels=sorted(g["label"].unique()),
                detection_floor=None,
            )
        else:
            run_id = run.run_id
        store.write_results_frame(run_id, g[["image_id", "label", "score"]].reset_index(drop=True))
        store.finish_run(run_id, "finished")
        run_ids.append(run_id)
    return run_ids


def import_coco_results(
    store,
    results,
    ground_truth,
    *,
    dataset: str | None = None,
    detector: str = "precomputed",
    model_version: str | None = None,
) -> str:
    """Import COCO detection results with their COCO ground truth, as one run.

    Scores from any framework that writes COCO results (pycocotools ``loadRes`` input,
    Ultralytics ``save_json``, Detectron2, MMDetection) become a run like any other: the
    ground truth's images are registered with their labels and boxes, every detection
    is stored with its pixel box, and every image of the ground truth counts as scored
    (an image without a detection has no result, as COCO evaluates it). Both the image
    level (highest score per image and label) and the detection level
    (:meth:`~calibrate.store.ScoreStore.detection_rows`) can then be calibrated.

    Parameters
    ----------
    store : calibrate.store.ScoreStore
    results : str or Path
        The results file: a JSON array of ``{"image_id", "category_id", "bbox": [x, y,
        width, height], "score"}`` (see :func:`calibrate.coco_results.read_coco_results`).
    ground_truth : str or Path
        The COCO annotation file the ids refer to; its images need not be on this
        machine (see :func:`calibrate.manifest.read_coco_ground_truth`).
    dataset : str, optional
        Dataset name in the store; default the ground truth's file stem, so results of
        several model versions on one ground truth share a dataset.
    detector : str, default "precomputed"
    model_version : str, optional
        Default ``"unknown"``; name it, since versions are never mixed in a curve.

    Returns
    -------
    str
        The run id. Importing the same files again finds that run and adds nothing;
        changed results become a new run, which wins per image (the latest run rule).

    Raises
    ------
    InputError
        On a bad ground truth or results file, naming the file and entry.
    """
    import pandas as pd

    gt = read_coco_ground_truth(ground_truth)
    frame = read_coco_results(results, gt)
    labeled = gt.dataset
    name = dataset or labeled.name
    version = model_version or "unknown"
    store.add_images(name, labeled.images, complete=True)
    # Every image of the ground truth was evaluated: one without detections is scored
    # with no result (a marker row), never left out as if it had failed.
    silent = sorted(set(img.image_id for img in labeled.images) - set(frame["image_id"]))
    markers = pd.DataFrame({"image_id": silent, "label": None, "score": None})
    rows = pd.concat([frame, markers], ignore_index=True) if silent else frame
    digest = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
    fingerprint = labeled.fingerprint + ";coco-results:" + digest
    run = store.find_run(detector, version, fingerprint, name)
    if run is None:
        run_id = store.begin_run(
            detector=detector,
            model_version=version,
            dataset=name,
            dataset_fingerprint=fingerprint,
            settings={"imported_from": str(Path(results).resolve()),
                      "ground_truth": str(Path(ground_truth).resolve())},
            labels=sorted(set(gt.categories.values())),
            detection_floor=None,
        )
    else:
        run_id = run.run_id
    store.write_results_frame(run_id, rows)
    store.finish_run(run_id, "finished")
    return run_id
