"""How tests/data/store_v3.duckdb.gz was made: run with calibrate at schema version 3
(commit 0a95bdd), ``python make_store_v3.py store_v3.duckdb && gzip -9 store_v3.duckdb``.
Kept for the record; with the current calibrate it would write a newer schema."""
import sys
from calibrate.store import ScoreStore, SCHEMA_VERSION
from calibrate.manifest import LabeledImage
from calibrate.detectors.base import Box, Detection, Result
assert SCHEMA_VERSION == 3
path = sys.argv[1]
with ScoreStore(path) as s:
    imgs = [LabeledImage(f"p{i}.png", f"/data/p{i}.png", frozenset({"scratch"} if i % 2 else ()),
                         content_hash=f"sha256:p{i}", split="cal" if i < 3 else "test") for i in range(5)]
    s.add_images("parts", imgs, complete=True)
    run = s.begin_run(detector="surface-defect", model_version="v1", dataset="parts",
                      dataset_fingerprint="fp", settings={}, labels=["scratch"],
                      detection_floor=None, source="/data/manifest.jsonl")
    s.record(run, [
        ("p0.png", Detection([], raw={"n": 0}), 1),
        ("p1.png", Detection([Result("scratch", 0.9, Box(10, 20, 30, 40))], raw={}), 1),
        ("p2.png", Detection([Result("scratch", 0.3, Box(0.1, 0.2, 0.3, 0.4, "ratio"))], raw={}), 1),
        ("p3.png", Detection([Result("scratch", 0.7, Box(1, 2, 3, 4)), Result("scratch", 0.2)], raw={}), 1),
    ], [("p4.png", "image", "truncated file", 1)])
    s.finish_run(run)
    # p0 changes content: the old identity is retired
    s.add_images("parts", [LabeledImage("p0.png", "/data/p0.png", frozenset(), content_hash="sha256:p0b", split="cal")])
