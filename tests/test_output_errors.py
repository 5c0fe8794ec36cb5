"""Every command that writes a file says in one line what it cannot write, with exit 2.

Folders are made unwritable with ``chattr +i`` (root ignores permission bits) and, where
that is not available, a path under a regular file ("Not a directory") serves the same
purpose; both are real file-system failures, not mocks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calibrate.cli import app
from calibrate.errors import OutputError
from calibrate.io import atomic_write_text

runner = CliRunner()
POLICY = "datasets/parts-policy.toml"


@pytest.fixture(scope="module")
def files(parts_store, tmp_path_factory):
    manifest, store = parts_store
    d = tmp_path_factory.mktemp("out")
    tf = d / "thresholds.json"
    res = runner.invoke(app, ["thresholds", "--store", str(store), "--policy", POLICY,
                              "--model-version", "v1", "--split", "calibration", "-o", str(tf)])
    assert res.exit_code == 0, res.output
    return dict(manifest=manifest, store=store, tf=tf)


def _immutable(folder: Path) -> bool:
    folder.mkdir()
    ok = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    return ok


@pytest.fixture(params=["under-a-file", "read-only"])
def bad_dir(request, tmp_path):
    if request.param == "under-a-file":
        f = tmp_path / "a-file"
        f.write_text("x")
        yield f
        return
    folder = tmp_path / "ro"
    if not shutil.which("chattr") or not _immutable(folder):
        pytest.skip("chattr +i is not available here; the under-a-file case covers it")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=False)


COMMANDS = {
    "thresholds -o": lambda f, d: ["thresholds", "--store", f["store"], "--policy", POLICY,
                                   "-o", d / "t.json"],
    "export -o": lambda f, d: ["export", f["tf"], "--to", "viam", "-o", d / "v.json",
                               "--store", f["store"]],
    "check --junit": lambda f, d: ["check", f["tf"], "--store", f["store"], "--model-version",
                                   "v2", "--split", "test", "--junit", d / "j.xml"],
    "report --out": lambda f, d: ["report", "--store", f["store"], "--policy", POLICY,
                                  "--out", d / "rep"],
    "score --store": lambda f, d: ["score", "--dataset", f["manifest"], "--detector",
                                   "surface-defect", "--model-version", "v1", "--store",
                                   d / "s.duckdb", "--no-progress"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_unwritable_output_is_one_line_and_exit_2(files, bad_dir, command):
    res = runner.invoke(app, [str(a) for a in COMMANDS[command](files, bad_dir)])
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad_dir) in errors[0]


def test_study_export_to_an_unwritable_path_names_the_key(files, bad_dir, tmp_path):
    shutil.copy(files["store"], tmp_path / "s.duckdb")
    study = tmp_path / "study.toml"
    study.write_text(
        f'name = "mini"\ndataset = "{files["manifest"]}"\nstore = "s.duckdb"\n'
        f'report = "rep"\nsplit = "calibration"\npolicy = "{Path(POLICY).resolve()}"\n'
        '[[detectors]]\ndetector = "surface-defect"\nmodel_version = "v2"\n'
        f'[[export]]\nto = "viam"\npath = "{bad_dir / "viam.json"}"\n')
    res = runner.invoke(app, ["run", str(study), "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "cannot write" in res.output


def test_a_symlinked_config_is_written_through_keeping_mode(tmp_path):
    target = tmp_path / "real" / "machine.json"
    target.parent.mkdir()
    target.write_text(json.dumps({"services": []}))
    target.chmod(0o640)
    link = tmp_path / "machine.json"
    link.symlink_to(target)
    atomic_write_text(link, '{"services": [1]}\n')
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text()) == {"services": [1]}
    assert target.stat().st_mode & 0o777 == 0o640


def test_stale_temp_files_of_a_killed_write_are_removed(tmp_path):
    out = tmp_path / "t.json"
    stale = tmp_path / ".t.json.abc123.tmp"
    fresh = tmp_path / ".t.json.def456.tmp"  # maybe another writer's, right now
    stale.write_text("half")
    fresh.write_text("half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    atomic_write_text(out, "{}\n")
    assert not stale.exists() and fresh.exists() and out.read_text() == "{}\n"


def test_output_error_is_an_input_error_and_an_os_error(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(OutputError, match=r"cannot write .*f/x\.json: Not a directory") as info:
        atomic_write_text(f / "x.json", "{}")
    assert isinstance(info.value, ValueError) and isinstance(info.value, OSError)
