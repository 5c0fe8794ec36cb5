"""Study files: validation with file, line and key; the resumable score -> report flow."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import duckdb
import numpy as np
import pytest

from calibrate.runner import RunOptions
from calibrate.study import StudyError, key_lines, load_study, run_study
from tests.fake_detectors import Slow

N_IMAGES = 40


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------


class Interrupting(Slow):
    """Presses Ctrl-C (raises KeyboardInterrupt) on its n-th call, once per marker file."""

    name = "interrupting"

    def __init__(self, marker: str, after: int = 10, **kw):
        super().__init__(**kw)
        self.marker = Path(marker)
        self.after = int(after)

    def detect(self, image):
        with self._lock:
            n = self.calls + 1
        if n >= self.after and not self.marker.exists():
            self.marker.write_text("interrupted once\n")
            raise KeyboardInterrupt
        return super().detect(image)


def interrupting(model_version: str = "s1", tally: str | None = None, marker: str = "",
                 after: int = 10, **_):
    """Plugin factory: tests.test_study:interrupting."""
    return Interrupting(marker=marker, after=after, model_version=model_version,
                        latency=0.0, tally=tally)


def make_dataset(root: Path, n: int = N_IMAGES) -> Path:
    """Tiny labeled set: distinct PNGs, 30% 'defect', alternating splits."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    lines = []
    for i in range(n):
        rel = f"images/img-{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), mode="L").save(root / rel)
        labels = ["defect"] if i % 10 in (1, 4, 8) else []
        split = "calibration" if i % 2 == 0 or i % 10 == 1 else "test"
        lines.append(json.dumps({"id": f"img-{i:03d}", "image": rel, "labels": labels,
                                 "split": split}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root / "manifest.jsonl"


STUDY = """\
name = "toy"
dataset = "data/manifest.jsonl"
store = "toy.duckdb"
split = "calibration"
report = "out/report"

[[detectors]]
detector = "{detector}"
model_version = "s1"
options = {{ tally = "{tally}"{extra} }}

[run]
concurrency = {concurrency}
{run_extra}

[defaults]
action = "reject"
cost_false_accept = 10
cost_false_reject = 1

[labels.defect]
prevalence = 0.05

[[export]]
to = "thresholds"
path = "out/thresholds.json"
"""


@pytest.fixture
def study_dir(tmp_path):
    make_dataset(tmp_path / "data")
    return tmp_path


def write_study(d: Path, *, detector="tests.fake_detectors:slow", concurrency=2, run_extra="",
                extra=", latency = 0.0") -> Path:
    p = d / "study.toml"
    p.write_text(STUDY.format(detector=detector, tally=d / "tally.txt", extra=extra,
                              concurrency=concurrency, run_extra=run_extra))
    return p


def store_counts(path: Path) -> tuple[int, int, int]:
    """(run rows, image rows, distinct images) of every run in a store file."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        runs = con.execute("SELECT count(*) FROM runs").fetchall()[0][0]
        n, distinct = con.execute(
            "SELECT count(*), count(DISTINCT image_id) FROM run_image_rows"
        ).fetchall()[0]
    finally:
        con.close()
    return runs, n, distinct


def tally(d: Path) -> list[str]:
    f = d / "tally.txt"
    return f.read_text().split() if f.exists() else []


# ---------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------


def test_run_study_writes_everything_and_rerun_skips_scoring(study_dir):
    p = write_study(study_dir)
    study = load_study(p)
    assert study.dataset == study_dir / "data" / "manifest.jsonl"
    assert study.store == study_dir / "toy.duckdb"
    result = run_study(study, progress=False, workers=1)
    assert result.status == "complete"
    assert [r.status for r in result.runs] == ["finished"]
    assert sorted(tally(study_dir)) == [f"img-{i:03d}" for i in range(N_IMAGES)]
    assert result.thresholds_file == study_dir / "out" / "thresholds.json"

    from calibrate.export.thresholds_file import read_thresholds_file

    tf = read_thresholds_file(result.thresholds_file)
    assert [(e.detector, e.model_version, e.label) for e in tf.entries] == [
        ("slow", "s1", "defect")]
    assert tf.entries[0].dataset == "data"
    assert result.report.html_path == study_dir / "out" / "report" / "index.html"
    html = result.report.html_path.read_text()
    assert "study.toml" in html and "thresholds.json" in html  # provenance, files written
    text = "\n".join(result.lines())
    assert "report:" in text and str(result.thresholds_file) in text

    again = run_study(p, progress=False, workers=1)
    assert [r.status for r in again.runs] == ["skipped"]
    assert len(tally(study_dir)) == N_IMAGES  # nothing was scored twice
    assert again.thresholds[0].choice.threshold == result.thresholds[0].choice.threshold


def test_call_budget_stops_cleanly_and_reruns_finish_with_every_image_once(study_dir):
    p = write_study(study_dir, run_extra="max_calls = 15")
    statuses = []
    for _ in range(5):
        result = run_study(p, progress=False, workers=1)
        statuses.append(result.status)
        if result.status == "complete":
            break
        assert result.report is None and result.thresholds_file is None
        assert "run the study again" in "\n".join(result.lines())
    assert statuses == ["incomplete", "incomplete", "complete"]
    calls = tally(study_dir)
    assert len(calls) == N_IMAGES and len(set(calls)) == N_IMAGES
    assert store_counts(study_dir / "toy.duckdb") == (1, N_IMAGES, N_IMAGES)
    assert result.report.html_path.exists()


def test_ctrl_c_mid_run_then_rerun_completes_with_every_image_scored_once(study_dir):
    marker = study_dir / "interrupted.flag"
    p = write_study(study_dir, detector="tests.test_study:interrupting", concurrency=1,
                    extra=f', marker = "{marker}", after = 12')
    with pytest.raises(KeyboardInterrupt):
        run_study(p, progress=False, workers=1)
    assert marker.exists()
    done_before = tally(study_dir)
    assert 0 < len(done_before) < N_IMAGES
    result = run_study(p, progress=False, workers=1)
    assert result.status == "complete"
    assert result.runs[0].already_done == len(done_before)
    calls = tally(study_dir)
    assert sorted(calls) == sorted(set(calls)) and len(calls) == N_IMAGES
    # one run, resumed: each image recorded once
    assert store_counts(study_dir / "toy.duckdb") == (1, N_IMAGES, N_IMAGES)


def test_other_export_targets_go_through_export_to(study_dir, monkeypatch):
    import calibrate.export

    seen = {}

    def fake_export_to(target, tf, path, *, store=None, **options):
        seen.update(target=target, labels=tf.labels(), path=path, store=store, options=options)
        Path(path).write_text("{}")
        return Path(path)

    monkeypatch.setattr(calibrate.export, "export_to", fake_export_to, raising=False)
    p = write_study(study_dir)
    p.write_text(p.read_text() + textwrap.dedent("""
        [[export]]
        to = "viam"
        path = "out/viam-fragment.json"
        service = "vision-qc"
        """))
    result = run_study(p, progress=False, workers=1)
    assert seen["target"] == "viam" and seen["labels"] == ["defect"]
    assert seen["options"] == {"service": "vision-qc"} and seen["store"] is not None
    assert ("viam", study_dir / "out" / "viam-fragment.json") in result.exports


def test_export_failure_names_the_export_table(study_dir, monkeypatch):
    import calibrate.export
    from calibrate.errors import InputError

    def failing(target, tf, path, **kw):
        raise InputError("service must be a string")

    monkeypatch.setattr(calibrate.export, "export_to", failing, raising=False)
    p = write_study(study_dir)
    text = p.read_text() + '\n[[export]]\nto = "viam"\npath = "out/v.json"\n'
    p.write_text(text)
    line = text.splitlines().index('to = "viam"')  # the header is the line before
    with pytest.raises(StudyError) as e:
        run_study(p, progress=False, workers=1)
    assert e.value.line == line and "[[export]] #2" in str(e.value)


def test_policy_label_missing_from_the_dataset_is_an_error_with_its_line(study_dir):
    p = write_study(study_dir)
    p.write_text(p.read_text().replace("[labels.defect]", "[labels.defekt]"))
    with pytest.raises(StudyError) as e:
        run_study(p, progress=False)
    lines = p.read_text().splitlines()
    assert e.value.line == lines.index("[labels.defekt]") + 1
    assert "'defekt' is not in the dataset" in str(e.value)


def test_unknown_split_is_an_error_with_its_line(study_dir):
    p = write_study(study_dir)
    p.write_text(p.read_text().replace('split = "calibration"', 'split = "calib"'))
    with pytest.raises(StudyError) as e:
        run_study(p, progress=False)
    assert e.value.line == 4 and "'calib'" in str(e.value) and e.value.key == "split"


def test_run_options_argument_overrides_the_run_table(study_dir):
    p = write_study(study_dir, run_extra="max_calls = 5")
    result = run_study(p, run_options=RunOptions(progress=False, concurrency=2), workers=1)
    assert result.status == "complete"


# ---------------------------------------------------------------------------------------
# Validation: every error names the key and its line
# ---------------------------------------------------------------------------------------

VALID = """\
name = "parts"                                   # 1
dataset = "data/manifest.jsonl"                  # 2
split = "calibration"                            # 3
                                                 # 4
[[detectors]]                                    # 5
detector = "surface-defect"                      # 6
model_version = "v1"                             # 7
                                                 # 8
[[detectors]]                                    # 9
detector = "surface-defect"                      # 10
model_version = "v2"                             # 11
                                                 # 12
[defaults]                                       # 13
action = "reject"                                # 14
cost_false_accept = 50                           # 15
cost_false_reject = 1                            # 16
                                                 # 17
[labels.crack]                                   # 18
prevalence = 0.002                               # 19
max_false_accept_rate = 0.001                    # 20
                                                 # 21
[[export]]                                       # 22
to = "thresholds"                                # 23
path = "out/thresholds.json"                     # 24
                                                 # 25
[[export]]                                       # 26
to = "viam"                                      # 27
path = "out/viam.json"                           # 28
"""


def load_text(d: Path, text: str):
    p = d / "study.toml"
    p.write_text(text)
    return load_study(p)


def test_valid_study_loads(study_dir):
    s = load_text(study_dir, VALID)
    assert s.name == "parts" and s.split == "calibration"
    assert [(d.detector, d.model_version, d.line) for d in s.detectors] == [
        ("surface-defect", "v1", 5), ("surface-defect", "v2", 9)]
    assert s.policies.for_label("crack").max_false_accept_rate == 0.001
    assert s.policies.for_label("dent").cost_false_accept == 50
    assert [(e.to, e.path.name, e.line) for e in s.exports] == [
        ("thresholds", "thresholds.json", 22), ("viam", "viam.json", 26)]
    assert s.report_dir == study_dir / "reports" / "parts"
    assert s.store == study_dir / "calibrate.duckdb"


@pytest.mark.parametrize(
    "old, new, line, key, words",
    [
        ('model_version = "v2"', 'modle_version = "v2"', 11, "detectors[1].modle_version",
         ["[[detectors]] #2", "unknown key"]),
        ('model_version = "v2"', "model_version = 2", 11, "detectors[1].model_version",
         ["must be a string", '"2"']),
        ('detector = "surface-defect"                      # 10',
         'detector = "surface-defekt"', 10, "detectors[1].detector", ["unknown detector"]),
        ('prevalence = 0.002', 'prevalence = 1.5', 19, "labels.crack.prevalence",
         ["[labels.crack]", "strictly between 0 and 1"]),
        ('max_false_accept_rate = 0.001', 'max_false_acept_rate = 0.001', 20,
         "labels.crack.max_false_acept_rate", ["unknown policy key"]),
        ('cost_false_accept = 50', 'cost_false_accept = "high"', 15,
         "defaults.cost_false_accept", ["must be a number"]),
        ('action = "reject"', 'action = "scrap"', 14, "defaults.action", ["'reject'"]),
        ('to = "viam"', 'to = "s3"', 27, "export[1].to",
         ["[[export]] #2", "unknown export target"]),
        ('path = "out/thresholds.json"', 'path = "out/thresholds.csv"', 24, "export[0].path",
         [".json"]),
        ('split = "calibration"', 'split = 3', 3, "split", ["must be a string"]),
        ('name = "parts"', 'nmae = "parts"', 1, "nmae", ["unknown key"]),
        ("[labels.crack]", "[label.crack]", 18, "label", ["unknown key", "labels"]),
        ('dataset = "data/manifest.jsonl"', 'dataset = "data/missing.jsonl"', 2, "dataset",
         ["does not exist"]),
    ],
)
def test_validation_errors_name_key_and_line(study_dir, old, new, line, key, words):
    assert old in VALID
    text = VALID.replace(old, new, 1)
    with pytest.raises(StudyError) as e:
        load_text(study_dir, text)
    err = e.value
    assert err.line == line, str(err)
    assert err.key == key
    msg = str(err)
    assert msg.startswith(f"{study_dir / 'study.toml'}:{line}: ")
    assert key.rsplit(".", 1)[-1].split("[")[0] in msg
    for w in words:
        assert w in msg


def test_missing_cost_points_at_the_label_table(study_dir):
    text = VALID.replace("cost_false_accept = 50                           # 15\n", "")
    with pytest.raises(StudyError) as e:
        load_text(study_dir, text)
    assert e.value.line == 17  # [labels.crack], one line up now
    assert "missing cost_false_accept" in str(e.value)


def test_bad_value_from_defaults_is_reported_at_defaults(study_dir):
    text = VALID.replace("cost_false_reject = 1 ", "confidence = 1.5\ncost_false_reject = 1 ")
    with pytest.raises(StudyError) as e:
        load_text(study_dir, text)
    assert e.value.line == 16 and e.value.key == "defaults.confidence"


def test_run_table_errors_name_the_option(study_dir):
    with pytest.raises(StudyError) as e:
        load_text(study_dir, VALID + "\n[run]\nconcurrency = 0\n")
    assert e.value.line == 31 and e.value.key == "run.concurrency"
    assert "at least 1" in str(e.value)
    with pytest.raises(StudyError) as e:
        load_text(study_dir, VALID + "\n[run]\nforce = true\n")
    assert e.value.key == "run.force" and "unknown key" in str(e.value)


def test_duplicate_detector_version_is_an_error(study_dir):
    with pytest.raises(StudyError) as e:
        load_text(study_dir, VALID.replace('model_version = "v2"', 'model_version = "v1"'))
    assert e.value.line == 11 and "already listed" in str(e.value)


def test_toml_syntax_error_has_the_parsers_line(study_dir):
    with pytest.raises(StudyError) as e:
        load_text(study_dir, VALID.replace('to = "viam"', 'to = viam'))
    assert e.value.line == 27 and "not valid TOML" in str(e.value)


def test_missing_dataset_and_detectors(study_dir):
    with pytest.raises(StudyError, match="missing key \"dataset\""):
        load_text(study_dir, 'name = "x"\n')
    with pytest.raises(StudyError, match=r"no \[\[detectors\]\]"):
        load_text(study_dir, 'dataset = "data/manifest.jsonl"\n')


def test_policy_file_is_merged_under_the_inline_tables(study_dir):
    (study_dir / "policy.toml").write_text(
        "[defaults]\ncost_false_accept = 5\ncost_false_reject = 1\n"
        "[labels.crack]\nprevalence = 0.01\nconfidence = 0.9\n"
    )
    text = 'dataset = "data/manifest.jsonl"\npolicy = "policy.toml"\n' \
           '[[detectors]]\ndetector = "surface-defect"\n[labels.crack]\nprevalence = 0.003\n'
    s = load_text(study_dir, text)
    crack = s.policies.for_label("crack")
    assert (crack.prevalence, crack.confidence, crack.cost_false_accept) == (0.003, 0.9, 5)
    assert "policy.toml" in s.policies.source


def test_key_lines_handles_arrays_of_tables_subtables_quotes_and_multiline_values():
    text = textwrap.dedent("""\
        title = "x"          # 1
        values = [           # 2
          [1, 2],            # 3
          [3, 4],            # 4
        ]                    # 5
        text = \"\"\"          # 6
        [not.a.table]        # 7
        not_a_key = 1        # 8
        \"\"\"                  # 9
        [[detectors]]        # 10
        detector = "a"       # 11
        [detectors.options]  # 12
        depth = 3            # 13
        [[detectors]]        # 14
        detector = "b"       # 15
        options.depth = 4    # 16
        [labels."weird.name"] # 17
        'quoted key' = 1     # 18
        """)
    lines = key_lines(text)
    assert lines[("values",)] == 2
    assert ("not", "a", "table") not in lines and ("not_a_key",) not in lines
    assert lines[("detectors", 0)] == 10
    assert lines[("detectors", 0, "options", "depth")] == 13
    assert lines[("detectors", 1, "detector")] == 15
    assert lines[("detectors", 1, "options", "depth")] == 16
    assert lines[("labels", "weird.name")] == 17
    assert lines[("labels", "weird.name", "quoted key")] == 18
