"""Images per second of the ``onnx`` detector through calibrate's runner, against ONNX
Runtime called directly in a loop on the same images.

The script generates the parts set (``--n`` images), builds an ONNX model in memory (a
small convolutional classifier: ``--model tiny`` is two 3x3 convolutions at 64x64, under
a millisecond per image; ``--model cnn`` four convolutions at 224x224, several
milliseconds, the order of a small deployed model), and measures, on the same images:

* **runner**: ``score_dataset`` into a fresh DuckDB store, with the runner's defaults for
  a local detector (one worker process per CPU, the model loaded in each, one runtime
  thread each) - what ``calibrate score --detector onnx`` does;
* **direct loop**: one process, one ``InferenceSession`` with ONNX Runtime's default
  threads, and for each image: decode the PNG, pre-process it the same way, ``run``;
* **inference only**: the same loop on tensors decoded and pre-processed beforehand.

It prints images/s of each and the ratio runner / direct loop (above 1 means the runner
is faster: its worker processes decode images in parallel; below 1 is the cost of the
store, the process pool and the checks on every result). Nothing is asserted: the
numbers depend on the machine.

Usage: python benchmarks/bench_onnx.py [--n 1200] [--model tiny|cnn] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def build_model(path: Path, kind: str) -> int:
    """Write a random-weight convolutional classifier (4 classes, softmax); return its
    input size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    size, chans = (64, [3, 8, 16]) if kind == "tiny" else (224, [3, 16, 32, 32, 64])
    nodes, inits, x = [], [], "x"
    for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
        w = (rng.normal(size=(cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
                  helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2],
                                   strides=[2, 2])]
        x = f"p{i}"
    inits += [numpy_helper.from_array(rng.normal(size=(chans[-1], 4)).astype(np.float32), "W"),
              numpy_helper.from_array(np.zeros(4, np.float32), "B")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "W", "B"], ["z"]),
              helper.make_node("Softmax", ["z"], ["probs"])]
    graph = helper.make_graph(
        nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                       [1, 3, size, size])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--model", choices=("tiny", "cnn"), default="tiny")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many timings")
    args = ap.parse_args()

    import onnxruntime as ort

    from calibrate.detectors.onnx_model import OnnxDetector
    from calibrate.manifest import read_manifest
    from calibrate.runner import RunOptions, score_dataset
    from calibrate.samples import make_parts
    from calibrate.store import ScoreStore

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ds = read_manifest(make_parts(tmp / "parts", n_parts=args.n, seed=1))
        model = tmp / "bench.onnx"
        size = build_model(model, args.model)
        (tmp / "labels.txt").write_text("scratch\ndent\nspot\ncrack\n")
        det = OnnxDetector(model=model, labels=tmp / "labels.txt", activation="none")
        n = len(ds.images)

        def runner() -> float:
            with ScoreStore(tmp / f"s{time.monotonic_ns()}.duckdb") as st:
                t0 = time.perf_counter()
                summary = score_dataset(ds, det, st, RunOptions(progress=False))
                elapsed = time.perf_counter() - t0
            assert summary.scored == n, summary
            return elapsed

        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        pre = det.preprocessing

        def direct() -> float:
            t0 = time.perf_counter()
            for im in ds.images:
                tensor, _ = pre.apply(im.to_array())
                sess.run(None, {"x": tensor})
            return time.perf_counter() - t0

        tensors = [pre.apply(im.to_array())[0] for im in ds.images]

        def inference() -> float:
            t0 = time.perf_counter()
            for t in tensors:
                sess.run(None, {"x": t})
            return time.perf_counter() - t0

        best = {name: min(f() for _ in range(args.repeat))
                for name, f in (("runner", runner), ("direct", direct),
                                ("inference", inference))}
    rate = {k: n / v for k, v in best.items()}
    print(f"{n} parts images ({args.model} model, {size}x{size} input), best of "
          f"{args.repeat}, ONNX Runtime {ort.__version__}:")
    print(f"  runner (worker processes, store) {rate['runner']:9.1f} images/s")
    print(f"  direct loop (decode + run)       {rate['direct']:9.1f} images/s")
    print(f"  inference only                   {rate['inference']:9.1f} images/s")
    print(f"ratio runner / direct loop: {rate['runner'] / rate['direct']:.2f}")


if __name__ == "__main__":
    main()
