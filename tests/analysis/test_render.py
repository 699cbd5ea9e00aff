"""Rendering: HTML is self-contained and escaped, Markdown links the PNGs, names are unique."""

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from normlab.analysis import render
from normlab.analysis.stats import verdict


def _report(caption="a <b> caption"):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    section = render.Section("1. Part <one>", "setup & text")
    section.findings.append(render.Finding("claim <x>", verdict([0.9, 0.91, 0.92], [0.5, 0.51, 0.52])))
    section.table = pd.DataFrame({"norm": ["none"], "mean": [0.51]})
    section.figures.append(render.FigureSpec("fig_a", fig, caption))
    return render.Report("Title", "summary", [section], ["store: x"])


def test_write_files_html_md_png(tmp_path):
    out = render.write_files(_report(), tmp_path / "r")
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert (out / "fig_a.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in html and "src=\"fig_a.png\"" not in html
    assert "1. Part &lt;one&gt;" in html and "claim &lt;x&gt;" in html  # escaped, not markup
    assert 'class="finding ok"' in html and "supported" in html
    assert "![a <b> caption](fig_a.png)" in md
    assert "| norm | mean |" in md and "| none | 0.51 |" in md
    assert "- **SUPPORTED**: claim <x>" in md
    assert "| claim <x> | supported | 1 |" in md  # the summary table of every claim
    assert 'class="verdicts"' in html


def test_duplicate_figure_names_are_refused(tmp_path):
    report = _report()
    report.sections[0].figures.append(report.sections[0].figures[0])
    with pytest.raises(ValueError, match="two figures are named 'fig_a'"):
        render.write_files(report, tmp_path)
