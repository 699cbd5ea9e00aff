"""Statistics against scipy.stats and against hand-computed answers; verdicts on planted effects."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from normlab.analysis import stats


def test_summarize_matches_scipy_t_interval():
    x = np.array([0.91, 0.93, 0.90, 0.95, 0.92])
    s = stats.summarize(x)
    lo, hi = sps.t.interval(0.95, df=len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert s.n == 5
    assert s.mean == pytest.approx(x.mean())
    assert s.std == pytest.approx(x.std(ddof=1))
    assert (s.ci_low, s.ci_high) == pytest.approx((lo, hi))
    assert stats.t_interval(x) == pytest.approx((lo, hi))


def test_summarize_known_answer_two_points():
    # n=2, values 0 and 2: mean 1, s = sqrt(2), half width = t_{1,0.975} * s / sqrt(2) = 12.706...
    s = stats.summarize([0.0, 2.0])
    assert s.mean == 1.0
    assert s.std == pytest.approx(math.sqrt(2))
    assert s.half_width == pytest.approx(12.7062047, rel=1e-6)


def test_summarize_drops_nan_and_handles_small_n():
    s = stats.summarize([1.0, float("nan"), 3.0])
    assert s.n == 2 and s.mean == 2.0
    one = stats.summarize([0.5])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.ci_low)
    assert "n=1" in one.format()
    assert stats.summarize([]).n == 0
    with pytest.raises(ValueError, match="confidence"):
        stats.summarize([1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError, match="1-D"):
        stats.summarize(np.zeros((2, 2)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_welch_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.9, 0.02, size=4)
    b = rng.normal(0.85, 0.05, size=6)
    w = stats.welch_test(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert w.t == pytest.approx(ref.statistic)
    assert w.p_value == pytest.approx(ref.pvalue)
    assert w.diff == pytest.approx(a.mean() - b.mean())
    # The interval of the difference is the one scipy reports for the same test.
    ci = ref.confidence_interval(0.95)
    assert (w.ci_low, w.ci_high) == pytest.approx((ci.low, ci.high))
    assert w.df == pytest.approx(ref.df)


def test_welch_constant_samples_and_too_few():
    w = stats.welch_test([1.0, 1.0, 1.0], [0.5, 0.5])
    assert w.p_value == 0.0 and w.diff == 0.5
    same = stats.welch_test([1.0, 1.0], [1.0, 1.0])
    assert same.p_value == 1.0
    few = stats.welch_test([1.0], [0.5, 0.6])
    assert math.isnan(few.p_value) and few.n_a == 1


def test_welch_rejects_a_confidence_outside_0_1():
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 95"):
        stats.welch_test([1.0, 2.0, 3.0], [1.0, 2.0], confidence=95)


def test_verdict_reads_one_shot_iterables_once():
    # A generator is an Iterable too; read twice, its means came out "nan vs nan baseline".
    v = stats.verdict((x for x in [0.9, 0.91, 0.92]), iter([0.5, 0.51, 0.52]), what="acc")
    assert v.text.startswith("acc: 0.91 vs 0.51 baseline (n=3 vs n=3 seeds)")
    assert v.text == stats.verdict([0.9, 0.91, 0.92], [0.5, 0.51, 0.52], what="acc").text


def test_verdict_planted_effect_is_supported():
    rng = np.random.default_rng(0)
    base = 0.80 + rng.normal(0, 0.01, size=5)
    better = 0.90 + rng.normal(0, 0.01, size=5)
    v = stats.verdict(better, base, min_effect=0.01, what="test accuracy")
    assert v.label == stats.SUPPORTED
    assert "n=5" in v.text and "p=" in v.text


def test_verdict_no_effect_is_not_supported():
    rng = np.random.default_rng(1)
    base = 0.80 + rng.normal(0, 0.002, size=5)
    same = 0.80 + rng.normal(0, 0.002, size=5)
    v = stats.verdict(same, base, min_effect=0.02)
    assert v.label == stats.NOT_SUPPORTED


def test_verdict_opposite_effect_and_lower_is_better():
    base = [0.9, 0.91, 0.89]
    worse = [0.7, 0.71, 0.69]
    assert stats.verdict(worse, base).label == stats.NOT_SUPPORTED
    # Lower is better (e.g. loss, steps to target): the smaller values support the claim.
    assert stats.verdict(worse, base, higher_is_better=False).label == stats.SUPPORTED


def test_verdict_noisy_or_single_seed_is_inconclusive():
    rng = np.random.default_rng(2)
    base = 0.8 + rng.normal(0, 0.1, size=2)
    variant = 0.82 + rng.normal(0, 0.1, size=2)
    assert stats.verdict(variant, base, min_effect=0.01).label == stats.INCONCLUSIVE
    one = stats.verdict([0.9], [0.8, 0.81])
    assert one.label == stats.INCONCLUSIVE and "fewer than 2 values" in one.text


def test_verdict_rejects_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        stats.verdict([1, 2], [1, 2], alpha=0)
    with pytest.raises(ValueError, match="min_effect"):
        stats.verdict([1, 2], [1, 2], min_effect=-1)


def test_steps_to_target():
    assert stats.steps_to_target([30, 10, 20], [0.9, 0.5, 0.8], 0.8) == 20
    assert math.isnan(stats.steps_to_target([1, 2], [0.1, 0.2], 0.5))
    with pytest.raises(ValueError, match="same length"):
        stats.steps_to_target([1, 2], [0.1], 0.5)


def test_aggregate_and_compare_to_baseline():
    frame = pd.DataFrame(
        {
            "norm": ["none"] * 3 + ["batch"] * 3,
            "acc": [0.80, 0.81, 0.79, 0.90, 0.91, 0.89],
        }
    )
    agg = stats.aggregate(frame, "norm", "acc")
    assert list(agg["norm"]) == ["batch", "none"]
    assert agg.set_index("norm").loc["batch", "mean"] == pytest.approx(0.90)
    assert agg.set_index("norm").loc["none", "n"] == 3
    cmp = stats.compare_to_baseline(frame, "norm", "acc", baseline="none", min_effect=0.01)
    assert list(cmp["norm"]) == ["batch"]
    assert cmp.loc[0, "verdict"] == stats.SUPPORTED
    assert cmp.loc[0, "diff"] == pytest.approx(0.10)
    with pytest.raises(ValueError, match="baseline 'nope'"):
        stats.compare_to_baseline(frame, "norm", "acc", baseline="nope")
    with pytest.raises(ValueError, match="not in the frame"):
        stats.aggregate(frame, "lr", "acc")


def test_paired_verdict_is_the_one_sample_t_test():
    changes = np.array([0.02, 0.03, 0.025, 0.035])
    v = stats.paired_verdict(changes, min_effect=0.005, what="after - before")
    ref = sps.ttest_1samp(changes, 0.0)
    assert v.test.p_value == pytest.approx(ref.pvalue)
    assert v.test.df == pytest.approx(len(changes) - 1)
    assert v.label == stats.SUPPORTED and "n=4 paired runs" in v.text
    assert stats.paired_verdict([0.001, -0.001, 0.0005], min_effect=0.01).label == stats.NOT_SUPPORTED
