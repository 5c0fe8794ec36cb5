"""The manifest package, scores_table and samples keep every old import working."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

import calibrate.datasets
import calibrate.manifest
import calibrate.samples
import calibrate.scores_table
from calibrate.errors import CalibrateWarning

#: Every public name calibrate.manifest had as one module.
OLD_MANIFEST_NAMES = [
    "CLEAN_FOLDERS",
    "CORRUPT",
    "EMPTY",
    "IMAGE_SUFFIXES",
    "LabeledImage",
    "LabeledSet",
    "MISSING",
    "NOT_A_FILE",
    "Problem",
    "REMOTE_SCHEMES",
    "SCORES_TABLE_COLUMNS",
    "UNREADABLE",
    "dataset_fingerprint",
    "read_manifest",
    "read_scores_table",
]


@pytest.mark.parametrize("name", OLD_MANIFEST_NAMES)
def test_old_manifest_names_still_import(name):
    assert name in calibrate.manifest.__all__
    assert getattr(calibrate.manifest, name) is not None


def test_scores_table_is_reexported_not_copied():
    assert calibrate.manifest.read_scores_table is calibrate.scores_table.read_scores_table
    assert calibrate.manifest.SCORES_TABLE_COLUMNS == ("image_id", "label", "score", "truth")


def test_datasets_is_an_alias_of_samples():
    assert calibrate.datasets.__all__ == calibrate.samples.__all__
    for name in calibrate.samples.__all__:
        assert getattr(calibrate.datasets, name) is getattr(calibrate.samples, name)
    assert "calibrate.samples" in calibrate.datasets.__doc__


@pytest.mark.parametrize(
    "code",
    [
        # one direction only: the scores table knows nothing of manifests
        "import calibrate.scores_table; assert 'calibrate.manifest' not in sys.modules",
        # pandas is imported where a table is read, not by importing the reader
        "import calibrate.manifest; assert 'pandas' not in sys.modules",
    ],
)
def test_import_costs_and_direction(code):
    subprocess.run([sys.executable, "-c", "import sys; " + code], check=True)


def test_parts_info_names_the_new_generator(tmp_path):
    manifest = calibrate.samples.make_parts(tmp_path / "parts", n_parts=20, seed=1)
    info = json.loads((manifest.parent / "dataset.json").read_text())
    assert info["generator"] == "calibrate.samples.make_parts"
    assert "calibrate.samples.make_parts" in (manifest.parent / ".gitignore").read_text()


def test_faces_info_names_the_new_generator(tmp_path):
    pytest.importorskip("skimage")
    manifest = calibrate.samples.make_faces(tmp_path / "faces", seed=0)
    info = json.loads((manifest.parent / "dataset.json").read_text())
    assert info["generator"] == "calibrate.samples.make_faces"


def test_folder_layout_warning_points_at_the_caller(tmp_path):
    root = tmp_path / "set"
    (root / "scratch").mkdir(parents=True)
    arr = np.zeros((4, 4, 3), dtype=np.uint8)
    Image.fromarray(arr).save(root / "scratch" / "p1.png")
    (root / "notes.txt").write_text("hi")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calibrate.manifest.read_manifest(root)
    [w] = [w for w in caught if issubclass(w.category, CalibrateWarning)]
    assert w.filename == __file__
