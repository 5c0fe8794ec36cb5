#!/usr/bin/env python
"""Generate the bundled synthetic parts-inspection set.

A thin wrapper over :func:`calibrate.samples.make_parts`; see ``datasets/README.md``.

Usage::

    python datasets/make_parts.py                       # -> datasets/parts/
    python datasets/make_parts.py --out /tmp/parts --n-parts 3000 --seed 7 --overwrite
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))

from calibrate.samples import make_parts, read_parts_info  # noqa: E402
from calibrate.errors import CalibrateError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--out", type=Path, default=HERE / "parts", help="output directory")
    ap.add_argument("--n-parts", type=int, default=2400, help="number of images (default 2400)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--image-size", type=int, default=64, help="square image side in pixels")
    ap.add_argument(
        "--overwrite", action="store_true", help="replace a parts set generated there before"
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        manifest = make_parts(
            args.out,
            n_parts=args.n_parts,
            seed=args.seed,
            image_size=args.image_size,
            overwrite=args.overwrite,
        )
    except CalibrateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = read_parts_info(manifest)
    comp = ", ".join(f"{k} {v}" for k, v in info["composition"].items())
    line = ", ".join(f"{k} {100 * v:.2g}%" for k, v in info["line_prevalence"].items())
    print(f"wrote {manifest} in {time.perf_counter() - t0:.1f} s")
    print(f"  sample: {comp}")
    print(f"  line prevalence: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
