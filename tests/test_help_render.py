"""Every command's --help says what its source says: no bracketed text swallowed as
markup, no stray spaces left where it was, no ``<bool>`` metavar on a flag, and help
that matches what the command does."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from calibrate.cli import app

runner = CliRunner()
GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)


def _help(*args: str) -> str:
    res = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    return res.stdout


def _squeeze(text: str) -> str:
    """Without any whitespace: help is wrapped (also at hyphens) where it likes."""
    return "".join(text.split())


def _source_texts(command) -> list[str]:
    texts = [command.help or ""]
    texts += [getattr(p, "help", None) or "" for p in command.params]
    return texts


def test_every_command_is_covered():
    assert {"thresholds", "check", "runs", "score", "export", "report", "run",
            "import-scores"} <= set(COMMANDS)


@pytest.mark.parametrize("name", ["", *COMMANDS])
def test_help_keeps_its_brackets_and_punctuation(name):
    command = GROUP.commands[name] if name else GROUP
    shown = _help(*([name] if name else []))
    squeezed = _squeeze(shown)
    for text in _source_texts(command):
        for bracketed in re.findall(r"\[[^\[\]]*\]", text):
            assert _squeeze(bracketed) in squeezed, (name, bracketed)
    flat = " ".join(shown.split())
    stray = re.findall(r"\S* [.,;:!?)](?=\s|$)", flat)
    assert not stray, (name, stray)
    assert "<bool>" not in shown, name


def test_policy_tables_are_named_in_thresholds_help():
    flat = " ".join(_help("thresholds").split())
    assert "[defaults] and [labels.<name>] tables" in flat
    assert "which win over [defaults]." in flat
    assert "[default: table]" in flat  # typer's own default still shows


def test_flags_have_no_metavar():
    shown = _help("thresholds")
    assert re.search(r"^\s*--allow-incomplete\s+With --store", shown, re.M), shown


def test_runs_store_help_matches_that_it_refuses_a_missing_store(tmp_path):
    flat = " ".join(_help("runs").split())
    assert "created if missing" not in flat and "must exist" in flat
    res = runner.invoke(app, ["runs", "--store", str(tmp_path / "none.duckdb")])
    assert res.exit_code == 2 and not (tmp_path / "none.duckdb").exists()


def test_allow_incomplete_help_fits_each_command():
    for name in ("check", "report"):
        flat = " ".join(_help(name).split())
        assert "With --store: choose" not in flat, name
        assert "--allow-incomplete" in flat and "INCOMPLETE DATA" in flat, name
