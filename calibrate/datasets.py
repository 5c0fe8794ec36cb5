"""Deprecated name of :mod:`calibrate.samples`, kept for old imports.

The sample-set generators moved to :mod:`calibrate.samples` (this module's name clashed
with the repository's top-level ``datasets/`` folder). Every public name is re-exported
here unchanged, so ``from calibrate.datasets import make_parts`` keeps working; new code
should write ``from calibrate.samples import make_parts``.
"""

from calibrate.samples import (
    FACES_DEGRADATIONS,
    FACES_GENERATOR_VERSION,
    FACES_LABELS,
    FACES_SOURCES,
    PARTS_GENERATOR_VERSION,
    PARTS_LABELS,
    PARTS_LINE_PREVALENCE,
    PARTS_SAMPLE_SHARE,
    faces_composition,
    load_parts,
    make_faces,
    make_parts,
    parts_composition,
    read_parts_info,
    render_face_item,
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
