#!/usr/bin/env python
"""Simulate production scores of the bundled parts line, with the truth kept aside.

Parts are drawn at the line's prevalence (each part is good or has one defect, with
the chances of ``PARTS_LINE_PREVALENCE``), rendered exactly as the bundled parts set
(:func:`calibrate.samples.parts.render_part`), and scored by the built-in surface-defect
detector. Written into ``--out``:

* ``production.csv`` - what a line records and ``calibrate monitor`` reads: ``image_id,
  label, score, model_version, detector, time`` (one row per label and part; no truth);
* ``truth.csv`` - ``image_id, labels`` (``;``-separated, empty for a good part): the
  truth the monitor never sees, for checking its estimates;
* ``production.json`` - the settings and the realised composition.

``--shift dust`` simulates a line whose air filter failed: dust on 90% of parts instead
of 35%, which looks like small spots to the detector (the score -> probability relation
of ``spot`` changes). ``--shift none`` draws from the same process as the labeled set.

Usage::

    python datasets/make_production.py --out datasets/production-ok --shift none
    python datasets/make_production.py --out datasets/production-dust --shift dust --seed 2
    calibrate monitor datasets/production-dust/production.csv \\
        --thresholds reports/parts/thresholds.json --store calibrate.duckdb \\
        --model-version v2 --window 1D
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

from calibrate.detectors.surface import SurfaceDefectDetector  # noqa: E402
from calibrate.samples.parts import (  # noqa: E402
    _SEVERITY_BETA,
    PARTS_LABELS,
    PARTS_LINE_PREVALENCE,
    render_part,
)

SHIFTS = {"none": None, "dust": {"dust": 0.90}}
START = datetime(2026, 11, 2, tzinfo=timezone.utc)


def simulate(out: Path, *, n: int, seed: int, version: str, shift: str, days: int) -> dict:
    """Write the three files; return the settings and realised composition."""
    out.mkdir(parents=True, exist_ok=True)
    (out / ".gitignore").write_text("*\n")
    det = SurfaceDefectDetector(version)
    kinds = ["good", *PARTS_LABELS]
    chances = [1.0 - sum(PARTS_LINE_PREVALENCE.values())] + [PARTS_LINE_PREVALENCE[k]
                                                              for k in PARTS_LABELS]
    plan = np.random.default_rng([seed, 7])
    drawn = plan.choice(len(kinds), size=n, p=chances)
    offsets = np.sort(plan.uniform(0.0, days * 86400.0, size=n))
    composition = {k: 0 for k in kinds}
    with open(out / "production.csv", "w", newline="") as fp, \
            open(out / "truth.csv", "w", newline="") as ft:
        wp, wt = csv.writer(fp), csv.writer(ft)
        wp.writerow(["image_id", "label", "score", "model_version", "detector", "time"])
        wt.writerow(["image_id", "labels"])
        for i in range(n):
            rng = np.random.default_rng([seed, 8, i])
            kind = kinds[drawn[i]]
            composition[kind] += 1
            severity = 0.0 if kind == "good" else max(float(rng.beta(*_SEVERITY_BETA)), 0.001)
            pixels, _ = render_part(rng, None if kind == "good" else kind, severity,
                                    nuisance_prob=SHIFTS[shift])
            pid = f"prod-{i + 1:06d}"
            when = (START + timedelta(seconds=float(offsets[i]))).isoformat()
            for r in det.score_array(pixels).results:
                wp.writerow([pid, r.label, repr(r.score), version, "surface-defect", when])
            wt.writerow([pid, "" if kind == "good" else kind])
    info = {"n": n, "seed": seed, "model_version": version, "shift": shift, "days": days,
            "nuisance_prob": SHIFTS[shift], "line_prevalence": PARTS_LINE_PREVALENCE,
            "composition": composition}
    (out / "production.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--n", type=int, default=6000, help="parts (default 6000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--model-version", default="v2", choices=["v1", "v2"])
    ap.add_argument("--shift", default="none", choices=sorted(SHIFTS))
    ap.add_argument("--days", type=int, default=3, help="spread over this many days")
    args = ap.parse_args(argv)
    if args.n < 1 or args.days < 1:
        print("error: --n and --days must be at least 1", file=sys.stderr)
        return 2
    info = simulate(args.out, n=args.n, seed=args.seed, version=args.model_version,
                    shift=args.shift, days=args.days)
    comp = ", ".join(f"{k} {v}" for k, v in info["composition"].items())
    print(f"{args.out / 'production.csv'}: {args.n} parts ({comp}), shift {args.shift}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
