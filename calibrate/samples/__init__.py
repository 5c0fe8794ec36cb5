"""Bundled sample data: seeded, generated labeled image sets for tests, notebooks and
tutorials.

* :mod:`calibrate.samples.parts` - :func:`make_parts`, a synthetic parts-inspection set
  (machined metal surfaces with scratches, dents, spots and rare cracks), and
  :func:`load_parts` / :func:`read_parts_info` to read it back.
* :mod:`calibrate.samples.faces` - :func:`make_faces`, faces and non-faces cut from the
  images that ship with scikit-image.
* :mod:`calibrate.samples.common` - what both share: the output folder, the stratified
  calibration/test split, writing the manifest.

Every set is written as a JSONL manifest that :func:`calibrate.manifest.read_manifest`
reads, and generation is deterministic: the same seed gives byte-identical files.
"""

from calibrate.samples.faces import (
    FACES_DEGRADATIONS,
    FACES_GENERATOR_VERSION,
    FACES_LABELS,
    FACES_SOURCES,
    faces_composition,
    make_faces,
    render_face_item,
)
from calibrate.samples.parts import (
    PARTS_GENERATOR_VERSION,
    PARTS_LABELS,
    PARTS_LINE_PREVALENCE,
    PARTS_SAMPLE_SHARE,
    load_parts,
    make_parts,
    parts_composition,
    read_parts_info,
    render_part,
    render_part_with_box,
)

__all__ = [
    "FACES_DEGRADATIONS",
    "FACES_GENERATOR_VERSION",
    "FACES_LABELS",
    "FACES_SOURCES",
    "PARTS_GENERATOR_VERSION",
    "PARTS_LABELS",
    "PARTS_LINE_PREVALENCE",
    "PARTS_SAMPLE_SHARE",
    "faces_composition",
    "load_parts",
    "make_faces",
    "make_parts",
    "parts_composition",
    "read_parts_info",
    "render_face_item",
    "render_part",
    "render_part_with_box",
]
