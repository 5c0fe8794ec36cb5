#!/usr/bin/env python
"""Generate the bundled faces / non-faces set from images scikit-image ships.

A thin wrapper over :func:`calibrate.samples.make_faces`; see ``datasets/README.md``.
Nothing is downloaded: every image is cut from ``skimage.data``.

Usage::

    python datasets/make_faces.py                       # -> datasets/faces/
    python datasets/make_faces.py --out /tmp/faces --seed 7 --overwrite
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))

from calibrate.samples import make_faces  # noqa: E402
from calibrate.errors import CalibrateError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--out", type=Path, default=HERE / "faces", help="output directory")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument(
        "--overwrite", action="store_true", help="replace a faces set generated there before"
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        manifest = make_faces(args.out, seed=args.seed, overwrite=args.overwrite)
    except CalibrateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = json.loads((manifest.parent / "dataset.json").read_text())
    comp = ", ".join(f"{k} {v}" for k, v in info["composition"].items())
    print(f"wrote {manifest} in {time.perf_counter() - t0:.1f} s")
    print(f"  {comp}")
    for kind, degr in info["degradations"].items():
        print(f"  {kind}: " + ", ".join(f"{k} {v}" for k, v in degr.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
