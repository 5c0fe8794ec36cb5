"""The score summary prints detector names as they are: Rich markup must not eat [brackets]."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from calibrate import cli


def _outcome(status: str) -> SimpleNamespace:
    summary = SimpleNamespace(status=status, n_images=3, run_id="r1", scored=3, failed=0,
                              already_done=0, calls=3, retries=0, elapsed=0.1,
                              failures_by_kind={"permanent[x]": 1})
    return SimpleNamespace(summary=summary, dataset=SimpleNamespace(name="set[a]"),
                           detector="opencv-haar-faces[min_neighbors=3]", model_version="v[1]")


def test_names_with_brackets_are_printed_whole(capsys):
    for status in ("finished", "skipped"):
        cli._print_score_summary(_outcome(status), Path("s[1].duckdb"), None)
        text = capsys.readouterr().out.replace("\n", " ")
        assert "opencv-haar-faces[min_neighbors=3] v[1]" in text
        assert "set[a]" in text and "s[1].duckdb" in text
        if status == "finished":
            assert "permanent[x]: 1" in text
