"""study.common: the helpers every part's section shares (most are exercised through the
sections in test_sections.py; these are checked on their own)."""

import numpy as np
import pandas as pd

from normlab.analysis.render import Finding, Section
from normlab.analysis.stats import NOT_SUPPORTED, SUPPORTED, verdict
from normlab.study.common import PartData, selected_lrs_text, verdict_label
from normlab.study.protocol import Selection


def test_selected_lrs_text_names_each_variant_and_the_edge():
    grid = pd.DataFrame({"lr": [1e-3, 3e-3], "n": [2, 2], "diverged": [0, 0], "failed": [0, 0], "score": [0.5, 0.6]})
    empty_runs = pd.DataFrame(columns=["run_id", "variant"])
    data = PartData(
        empty_runs,
        pd.DataFrame(),
        {"none": Selection("none", grid, 3e-3, True), "batch": Selection("batch", grid, 1e-3, False)},
    )
    assert selected_lrs_text(data) == "Stage 1 selected lrs: none: 3e-03 (at the edge); batch: 1e-03"
    assert selected_lrs_text(PartData(empty_runs, pd.DataFrame())) is None


def test_verdict_label_reads_the_first_matching_claim():
    rng = np.random.default_rng(0)
    higher = verdict(rng.normal(1.0, 0.01, 10), rng.normal(0.0, 0.01, 10), min_effect=0.1, what="x")
    lower = verdict(rng.normal(0.0, 0.01, 10), rng.normal(1.0, 0.01, 10), min_effect=0.1, what="x")
    sec = Section(
        "t", "s", findings=[Finding("A holds", higher), Finding("A holds again", lower), Finding("B holds", lower)]
    )
    assert verdict_label(sec, "A holds") == SUPPORTED
    assert verdict_label(sec, "B") == NOT_SUPPORTED
    assert verdict_label(sec, "C") is None
