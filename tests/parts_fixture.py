"""A small parts set scored by both surface-defect versions, shared by export and check tests."""

from __future__ import annotations

from pathlib import Path

from calibrate.datasets import make_parts
from calibrate.detectors.surface import SurfaceDefectDetector
from calibrate.manifest import read_manifest
from calibrate.runner import RunOptions, score_dataset
from calibrate.store import ScoreStore


def build_parts_store(folder: Path, n_parts: int = 600) -> tuple[Path, Path]:
    """Make the parts set in ``folder`` and score it with v1 and v2; return (manifest, store)."""
    manifest = make_parts(folder / "parts", n_parts=n_parts, seed=3)
    store_path = folder / "parts.duckdb"
    ds = read_manifest(manifest)
    with ScoreStore(store_path) as store:
        for version in ("v1", "v2"):
            score_dataset(ds, SurfaceDefectDetector(version), store,
                          RunOptions(progress=False, concurrency=1))
    return manifest, store_path


PARTS_POLICY = Path(__file__).resolve().parents[1] / "datasets" / "parts-policy.toml"
SIGNED_OFF = 'if_limit_unproven = "cost_optimal"'


def refusing_parts_policy(folder: Path) -> Path:
    """The bundled parts policy without its signed-off crack decision, so crack's unproven
    limit takes the default ``if_limit_unproven = "refuse"``."""
    text = PARTS_POLICY.read_text()
    assert SIGNED_OFF in text, "the bundled policy no longer signs off crack"
    out = Path(folder) / "refusing-parts-policy.toml"
    out.write_text(text.replace(SIGNED_OFF, ""))
    return out
