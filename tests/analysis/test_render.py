"""Rendering: HTML is self-contained and escaped, Markdown links the PNGs, names are unique."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from normlab.analysis import render
from normlab.analysis.stats import INCONCLUSIVE, SUPPORTED, verdict


def _report(caption="a <b> caption"):
    fig = Figure()
    fig.add_subplot().plot([0, 1], [0, 1])
    section = render.Section("1. Part <one>", "setup & text")
    section.findings.append(
        render.Finding(
            "claim <x>", verdict([0.9, 0.91, 0.92], [0.5, 0.51, 0.52]), literature="Ioffe & Szegedy (2015) <found> it"
        )
    )
    section.table = pd.DataFrame({"norm": ["none"], "mean": [0.51]})
    section.figures.append(render.FigureSpec("fig_a", fig, caption))
    return render.Report("Title", "summary", [section], ["store: x"])


def test_write_files_html_md_png(tmp_path):
    out = render.write_files(_report(), tmp_path / "r")
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert (out / "fig_a.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in html and 'src="fig_a.png"' not in html
    assert "1. Part &lt;one&gt;" in html and "claim &lt;x&gt;" in html  # escaped, not markup
    assert 'class="finding ok"' in html and "supported" in html
    assert "![a <b> caption](fig_a.png)" in md
    assert "| norm | mean |" in md and "| none | 0.51 |" in md
    assert "- **SUPPORTED**: claim <x>" in md
    assert "<b>Literature:</b> Ioffe &amp; Szegedy (2015) &lt;found&gt; it" in html
    assert "\n  *Literature:* Ioffe & Szegedy (2015) <found> it" in md
    # The claims table: effect and interval in display units, raw and adjusted p, n per side.
    v = verdict([0.9, 0.91, 0.92], [0.5, 0.51, 0.52])
    assert f"| claim <x> | 1 | +0.4 | [+0.377, +0.423] | {v.p_value:.2g} | {v.p_value:.2g} | 3 vs 3 | supported |" in md
    assert md.index("1 claim tested: 1 supported") < md.index("| claim | part |")
    assert 'class="verdicts"' in html


def test_duplicate_figure_names_are_refused(tmp_path):
    report = _report()
    report.sections[0].figures.append(report.sections[0].figures[0])
    with pytest.raises(ValueError, match="two figures are named 'fig_a'"):
        render.write_files(report, tmp_path)


def _section(title, p_like_shift):
    base = np.array([0.0, 0.1, -0.1, 0.05, -0.05, 0.02])
    section = render.Section(title, "setup")
    section.findings.append(render.Finding(f"claim {title}", verdict(base + p_like_shift, base[::-1])))
    return section


def test_write_files_adjusts_every_finding_of_every_section_together(tmp_path):
    # One claim with raw p ~ 0.015 (supported alone) and nine null claims in other sections.
    sections = [_section("1. A", 0.12)] + [_section(f"{k + 2}. N", 0.001 * k) for k in range(9)]
    report = render.Report("T", "s", sections)
    assert sections[0].findings[0].verdict.label == SUPPORTED
    adjusted = render.adjust_report(report)
    first = adjusted.sections[0].findings[0].verdict
    assert first.family == 10 and first.p_adjusted > 0.05 and first.label == INCONCLUSIVE
    assert report.sections[0].findings[0].verdict.p_adjusted is None  # the input is left as it was
    assert render.adjust_report(adjusted) == adjusted
    md = (render.write_files(report, tmp_path) / "report.md").read_text()
    assert "- **INCONCLUSIVE**: claim 1. A" in md and "10 claims tested: 0 supported" in md
