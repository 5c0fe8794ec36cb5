"""Precomputed scores: results produced elsewhere (a Viam machine's logs, a notebook)
imported into the store as runs, so every later step treats them like any other run."""

from __future__ import annotations

import hashlib
from pathlib import Path

from calibrate.manifest import LabeledImage, dataset_fingerprint, read_scores_table

__all__ = ["import_scores"]


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
