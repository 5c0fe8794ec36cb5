"""The thin `calibrate report` and `calibrate run` commands, on real files."""

import json

from typer.testing import CliRunner

from calibrate.cli import app

runner = CliRunner()


def test_report_command_writes_html_markdown_and_figures(parts_store, tmp_path):
    _, store_path = parts_store
    policy = tmp_path / "p.toml"
    policy.write_text("[defaults]\ncost_false_accept = 20\ncost_false_reject = 1\n"
                      "[labels.crack]\nmax_false_accept_rate = 0.001\n")
    res = runner.invoke(app, ["report", "--store", str(store_path), "--policy", str(policy),
                              "--out", str(tmp_path / "rep"), "--model-version", "v1"])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "rep" / "index.html").read_text()
    assert all(label in html for label in ("scratch", "dent", "spot", "crack"))
    assert (tmp_path / "rep" / "summary.md").exists()
    assert any((tmp_path / "rep" / "figures").glob("*.svg"))
    res = runner.invoke(app, ["report", "--store", str(tmp_path / "none.duckdb")])
    assert res.exit_code == 2 and "no score store" in res.stderr


def test_run_command_does_the_whole_flow_and_resumes(parts_store, tmp_path):
    manifest, _ = parts_store
    study = tmp_path / "study.toml"
    study.write_text(
        f'name = "mini"\ndataset = "{manifest}"\nstore = "s.duckdb"\nreport = "rep"\n'
        '[[detectors]]\ndetector = "surface-defect"\nmodel_version = "v2"\n'
        '[defaults]\ncost_false_accept = 20\ncost_false_reject = 1\n'
        '[labels.crack]\nprevalence = 0.002\n'
        '[[export]]\nto = "thresholds"\npath = "rep/thresholds.json"\n'
        '[[export]]\nto = "viam"\npath = "rep/viam.json"\n'
    )
    res = runner.invoke(app, ["run", str(study), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "report:" in res.stdout and "thresholds file:" in res.stdout
    viam = json.loads((tmp_path / "rep" / "viam.json").read_text())
    assert set(viam["attributes"]["label_confidences"]) <= {"scratch", "dent", "spot", "crack"}
    again = runner.invoke(app, ["run", str(study), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "surface-defect v2: already done" in again.stdout  # nothing scored twice
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\ndataset = "nope.jsonl"\n[defaults]\ncolour = 1\n')
    res = runner.invoke(app, ["run", str(bad)], env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "bad.toml:" in res.stderr
