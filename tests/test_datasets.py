"""Tests of calibrate.datasets: the generated parts set, on real files in tmp_path."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from calibrate import stats
from calibrate.datasets import (
    PARTS_LABELS,
    PARTS_LINE_PREVALENCE,
    PARTS_SAMPLE_SHARE,
    load_parts,
    make_parts,
    parts_composition,
    read_parts_info,
    render_part,
)
from calibrate.errors import InputError
from calibrate.manifest import LabeledImage

ROOT = Path(__file__).resolve().parents[1]
N = 300


def read_lines(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def digest_tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("parts")
    manifest = make_parts(out, n_parts=N, seed=0)
    return manifest, read_lines(manifest), read_parts_info(out)


# ---------------------------------------------------------------------------------------
# Layout and manifest
# ---------------------------------------------------------------------------------------


def test_layout(small):
    manifest, lines, _ = small
    out = manifest.parent
    assert manifest.name == "manifest.jsonl"
    assert (out / "dataset.json").is_file()
    assert (out / ".gitignore").read_text().strip().endswith("*")
    assert len(lines) == N
    assert len(list((out / "images").glob("part-*.png"))) == N
    assert not list(out.glob("*.tmp"))


def test_manifest_lines(small):
    manifest, lines, _ = small
    out = manifest.parent
    for i, rec in enumerate(lines, 1):
        assert rec["id"] == f"part-{i:05d}"
        assert rec["image"] == f"images/part-{i:05d}.png"
        assert set(rec) == {"id", "image", "labels", "objects", "width", "height", "split",
                            "severity", "nuisances"}
        assert (rec["width"], rec["height"]) == (64, 64)
        # One box per defect, none on a good part (a real negative).
        assert [o["label"] for o in rec["objects"]] == rec["labels"]
        for o in rec["objects"]:
            x0, y0, x1, y1 = o["box"]
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        assert rec["split"] in ("calibration", "test")
        assert isinstance(rec["labels"], list) and len(rec["labels"]) <= 1
        assert set(rec["labels"]) <= set(PARTS_LABELS)
        if rec["labels"]:
            assert 0.0 < rec["severity"] <= 1.0
        else:
            assert rec["severity"] == 0.0
        assert set(rec["nuisances"]) <= {"dust", "machining_mark", "smudge"}
    with Image.open(out / lines[0]["image"]) as im:
        assert im.format == "PNG" and im.size == (64, 64) and im.mode == "L"


def test_images_look_like_metal_not_blank(small):
    manifest, lines, _ = small
    arrs = [np.asarray(Image.open(manifest.parent / r["image"])) for r in lines[:30]]
    for a in arrs:
        assert 60 < a.mean() < 200  # mid-grey metal, no clipping to black or white
        assert 2 < a.std() < 40  # texture, gradient and noise, but no garbage
    assert len({a.tobytes() for a in arrs}) == len(arrs)


def test_read_by_the_manifest_reader(small):
    from calibrate.manifest import read_manifest

    manifest, lines, _ = small
    labeled = read_manifest(manifest, labels=PARTS_LABELS, hash_images=False)
    assert not labeled.problems
    assert [img.image_id for img in labeled.images] == [r["id"] for r in lines]
    assert [sorted(img.labels) for img in labeled.images] == [r["labels"] for r in lines]
    assert labeled.images[0].metadata["severity"] == lines[0]["severity"]


def test_load_parts(small):
    manifest, lines, _ = small
    images = load_parts(manifest)
    assert all(isinstance(img, LabeledImage) for img in images)
    assert [img.image_id for img in images] == [r["id"] for r in lines]
    assert images[0].to_array().shape == (64, 64, 3)
    cal = load_parts(manifest.parent, split="calibration")
    assert {img.split for img in cal} == {"calibration"}
    assert len(cal) == sum(r["split"] == "calibration" for r in lines)


# ---------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(small, tmp_path):
    manifest, _, _ = small
    again = make_parts(tmp_path / "again", n_parts=N, seed=0)
    assert digest_tree(again.parent) == digest_tree(manifest.parent)


def test_other_seed_gives_other_data(small, tmp_path):
    manifest, lines, _ = small
    other = make_parts(tmp_path / "other", n_parts=N, seed=1)
    assert other.read_bytes() != manifest.read_bytes()
    a = (manifest.parent / "images/part-00001.png").read_bytes()
    b = (other.parent / "images/part-00001.png").read_bytes()
    assert a != b
    # same composition, different order
    count = lambda ls: Counter(tuple(r["labels"]) for r in ls)  # noqa: E731
    assert count(read_lines(other)) == count(lines)


def test_render_part_is_a_pure_function_of_its_rng():
    a, na = render_part(np.random.default_rng(5), "scratch", 0.5)
    b, nb = render_part(np.random.default_rng(5), "scratch", 0.5)
    assert a.dtype == np.uint8 and a.shape == (64, 64)
    np.testing.assert_array_equal(a, b)
    assert na == nb


def test_severity_sets_contrast():
    # same seed: same surface, same defect geometry, only the contrast differs
    def draw(defect, sev):
        return render_part(np.random.default_rng(11), defect, sev)[0].astype(int)

    for defect in PARTS_LABELS:
        faint = draw(defect, 0.001)
        assert np.abs(draw(defect, 1.0) - faint).max() > 20, defect  # obvious
        assert np.abs(draw(defect, 0.05) - faint).max() <= 6, defect  # nearly invisible


# ---------------------------------------------------------------------------------------
# Composition: enrichment, prevalence, the rare type, counts
# ---------------------------------------------------------------------------------------


def test_counts_match_dataset_json(small):
    _, lines, info = small
    got = Counter((r["labels"] or ["good"])[0] for r in lines)
    assert dict(got) == info["composition"] == parts_composition(N)
    assert sum(info["composition"].values()) == N == info["n_parts"]
    for split in ("calibration", "test"):
        got = Counter((r["labels"] or ["good"])[0] for r in lines if r["split"] == split)
        assert dict(got) == info["splits"][split]
    nuis = Counter(n for r in lines for n in r["nuisances"])
    assert dict(nuis) == info["nuisances"]


def test_split_is_stratified(small):
    _, lines, info = small
    for kind, n in info["composition"].items():
        n_cal = info["splits"]["calibration"].get(kind, 0)
        assert abs(n_cal - 0.7 * n) <= 1


def test_dataset_json_prevalence_and_enrichment(small):
    _, _, info = small
    assert info["labels"] == list(PARTS_LABELS)
    assert info["line_prevalence"] == PARTS_LINE_PREVALENCE
    assert info["seed"] == 0 and info["image_size"] == [64, 64]
    line = info["line_prevalence"]
    # exactly one rare type: under 1% of parts on the line
    assert [k for k, v in line.items() if v < 0.01] == ["crack"]
    for label in PARTS_LABELS:
        sample_share = info["composition"][label] / N
        assert sample_share > 3 * line[label], label  # enriched
        assert info["enrichment"][label] == pytest.approx(sample_share / line[label], rel=1e-3)
    assert info["sample_defective_share"] > 0.4 > 0.1 > info["line_defective_share"]


def test_default_size_puts_a_tight_limit_visibly_out_of_reach():
    comp = parts_composition()
    assert 2000 <= sum(comp.values()) <= 3000
    needed = stats.samples_needed(0.001, 0.95)  # ~3,000 positives, even with no misses
    for label in PARTS_LABELS:
        assert comp[label] < needed / 5, label
    assert 10 <= comp["crack"] < 60  # the rare type has few examples
    assert comp["crack"] < min(comp[k] for k in ("scratch", "dent", "spot")) / 5
    assert comp["good"] / sum(comp.values()) == pytest.approx(
        1 - sum(PARTS_SAMPLE_SHARE.values()), abs=0.01
    )


def test_good_parts_carry_nuisances(small):
    _, lines, _ = small
    good = [r for r in lines if not r["labels"]]
    kinds = Counter(n for r in good for n in r["nuisances"])
    assert set(kinds) == {"dust", "machining_mark", "smudge"}
    assert 0.2 < sum(bool(r["nuisances"]) for r in good) / len(good) < 0.9


def test_severities_span_obvious_to_nearly_invisible(tmp_path):
    lines = read_lines(make_parts(tmp_path, n_parts=600, seed=3))
    sev = np.array([r["severity"] for r in lines if r["labels"]])
    assert sev.min() < 0.05 and sev.max() > 0.9
    assert np.mean(sev < 0.2) > 0.15  # plenty of subtle defects


def test_small_sets_still_have_the_rare_type(tmp_path):
    info = read_parts_info(make_parts(tmp_path, n_parts=120, seed=0))
    assert info["composition"]["crack"] >= 2


# ---------------------------------------------------------------------------------------
# Arguments and output directory
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"n_parts": 0}, {"n_parts": 2.5}, {"n_parts": True}, {"seed": -1}, {"image_size": 16}],
)
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(InputError):
        make_parts(tmp_path / "x", **kwargs)


def test_refuses_non_empty_dir_unless_overwrite(tmp_path):
    make_parts(tmp_path, n_parts=20, seed=0)
    with pytest.raises(InputError, match="overwrite"):
        make_parts(tmp_path, n_parts=20, seed=0)
    manifest = make_parts(tmp_path, n_parts=10, seed=1, overwrite=True)
    assert len(read_lines(manifest)) == 10
    assert len(list((tmp_path / "images").glob("*.png"))) == 10  # old images removed
    assert read_parts_info(tmp_path)["seed"] == 1


def test_overwrite_never_touches_a_foreign_directory(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="refusing"):
        make_parts(tmp_path, n_parts=10, overwrite=True)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_output_path_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(InputError, match="not a directory"):
        make_parts(f, n_parts=10)


def test_read_parts_info_missing(tmp_path):
    with pytest.raises(InputError, match="make_parts"):
        read_parts_info(tmp_path)


def test_script(tmp_path):
    out = tmp_path / "p"
    run = subprocess.run(
        [sys.executable, str(ROOT / "datasets" / "make_parts.py"), "--out", str(out),
         "--n-parts", "25", "--seed", "4"],
        capture_output=True, text=True, check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "line prevalence" in run.stdout
    assert digest_tree(out) == digest_tree(make_parts(tmp_path / "q", n_parts=25, seed=4).parent)
    again = subprocess.run(
        [sys.executable, str(ROOT / "datasets" / "make_parts.py"), "--out", str(out)],
        capture_output=True, text=True, check=False,
    )
    assert again.returncode == 2 and "overwrite" in again.stderr
