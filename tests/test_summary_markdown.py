"""summary.md is a merge-request comment: a one-line verdict first, tables that fit an
880-px comment box (at most 7 columns), held-out figures kept, and no link to a file that
is not committed (the report folder is generated output)."""

from __future__ import annotations

import re

import pytest

from calibrate.report import write_report
from calibrate.thresholds import format_rate, load_policy_file
from tests.parts_fixture import PARTS_POLICY, build_parts_store, refusing_parts_policy

#: GitHub's and GitLab's comment box, and what a table cell costs around its text.
BOX_PX = 880
CELL_PADDING_PX = 26   # 13 px either side (GitHub's markdown CSS)
CHAR_PX = 8            # a generous average glyph width at 14 px (code spans ~7.2 px)
VERDICT = re.compile(r"^\*\*(Deploy|Keep|Review|Do not deploy) [^*]+\*\*: \S")


@pytest.fixture(scope="module")
def parts_store(tmp_path_factory):
    _, store = build_parts_store(tmp_path_factory.mktemp("parts"), n_parts=600)
    return store


@pytest.fixture(scope="module")
def signed_off(parts_store, tmp_path_factory):
    return write_report(parts_store, load_policy_file(PARTS_POLICY),
                        tmp_path_factory.mktemp("r") / "parts", split="calibration")


@pytest.fixture(scope="module")
def refused(parts_store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("refused")
    return write_report(parts_store, load_policy_file(refusing_parts_policy(folder)),
                        folder / "parts", split="calibration", model_versions=["v2"])


def tables(md: str) -> list[list[list[str]]]:
    """Every Markdown table: its rows, each a list of cells (delimiter row dropped)."""
    out, current = [], None
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if current is None:
                current = []
                out.append(current)
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        else:
            current = None
    return out


def min_width_px(table: list[list[str]]) -> int:
    """The narrowest the table can be: each column as wide as its longest unbreakable
    word (cells wrap at spaces), plus padding. Markup characters do not render."""
    width = 0
    for col in zip(*table, strict=True):
        words = [w for cell in col for w in re.sub(r"[*`\\]", "", cell).split()]
        width += CHAR_PX * max((len(w) for w in words), default=0) + CELL_PADDING_PX
    return width


def test_first_line_is_the_verdict(signed_off):
    md = signed_off.markdown_path.read_text(encoding="utf-8")
    first = md.splitlines()[0]
    assert VERDICT.match(first), first
    # v2 is the candidate, compared with v1 on held-out cost; crack's sign-off is named
    assert first.startswith("**Deploy v2**: cheaper than v1 on all 4 labels (held-out test cost)")
    assert "crack needs sign-off (limit unproven)" in first
    v1 = {r.label: r for r in signed_off.thresholds if r.model_version == "v1"}
    v2 = {r.label: r for r in signed_off.thresholds if r.model_version == "v2"}
    assert all(v2[k].held_out.expected_cost < v1[k].held_out.expected_cost for k in v2)
    flagged = sorted(k for k, r in v2.items() if r.held_out_flags)
    if flagged:
        assert f"held-out ⚑ on {', '.join(flagged)}" in first


def test_a_refused_label_blocks_the_verdict(refused):
    md = refused.markdown_path.read_text(encoding="utf-8")
    first = md.splitlines()[0]
    assert VERDICT.match(first), first
    assert first.startswith("**Do not deploy v2 yet**: 4 labels, 3 deployed as chosen")
    assert "crack refused (limit unproven; not exported)" in first


@pytest.mark.parametrize("which", ["signed_off", "refused"])
def test_tables_fit_an_mr_comment(which, request):
    md = request.getfixturevalue(which).markdown_path.read_text(encoding="utf-8")
    found = tables(md)
    assert len(found) >= 2  # the summary and the options of crack
    for t in found:
        widths = {len(row) for row in t}
        assert len(widths) == 1, f"rows of unequal width: {t[0]}"
        assert widths.pop() <= 7, f"more than 7 columns: {t[0]}"
        assert min_width_px(t) <= BOX_PX, f"cannot fit {BOX_PX} px: {t[0]}"


def test_held_out_figures_are_kept(signed_off):
    md = signed_off.markdown_path.read_text(encoding="utf-8")
    for r in signed_off.thresholds:
        h, c = r.held_out, r.choice
        assert h is not None and h.threshold == c.threshold
        for x in (h, c):
            assert (f"{format_rate(x.false_accept_rate)} ({format_rate(x.false_accept_rate_upper)})"
                    f" · {x.false_accepts}/30") in md
            assert (f"{format_rate(x.false_reject_rate)} ({format_rate(x.false_reject_rate_upper)})"
                    f" · {x.false_rejects}/30") in md
            assert f"{x.n_positive:,} / {x.n_negative:,}" in md
    assert md.count("| held-out test") == len(signed_off.thresholds)


def test_no_links_to_uncommitted_files(signed_off, refused):
    for report in (signed_off, refused):
        md = report.markdown_path.read_text(encoding="utf-8")
        assert "](figures/" not in md
        targets = re.findall(r"\]\(([^)]*)\)", md)
        assert all(t.startswith(("https://", "http://", "#")) for t in targets), targets
        assert "<img" not in md and "<a " not in md
        # the figures are still named, as text, for whoever has the report folder
        n = sum(p.suffix == ".png" for p in report.figure_paths)
        assert len(re.findall(r"`figures/[^`]+\.png`", md)) == n
        # raw HTML is limited to collapsed sections, balanced
        assert set(re.findall(r"</?([a-z]+)", md)) <= {"details", "summary"}
        assert md.count("<details>") == md.count("</details>")
