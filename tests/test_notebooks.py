"""Tutorial notebooks: stored without outputs, and they run from a clean kernel."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ has no .ipynb files"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a code cell has stored outputs"
            assert cell.execution_count is None, f"{path.name}: a cell has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    # The inline backend (display-less: figures become image/png outputs), whatever the
    # environment says; "agg" would draw nothing the test could see.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    t0 = time.monotonic()
    client.execute()
    elapsed = time.monotonic() - t0
    assert elapsed < 60, f"{path.name} took {elapsed:.0f} s; keep tutorials under a minute"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{path.name}: a cell did not run"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"], f"{path.name}: a cell failed"
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert pngs, f"{path.name}: no figure rendered (no image/png output)"
    for o in pngs:
        assert base64.b64decode(o.data["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
