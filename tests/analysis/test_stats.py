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


def test_welch_too_few_values():
    few = stats.welch_test([1.0], [0.5, 0.6])
    assert math.isnan(few.p_value) and few.n_a == 1 and few.diff == pytest.approx(0.45)
    empty = stats.welch_test([], [0.5, 0.6])
    assert math.isnan(empty.diff) and empty.n_a == 0


def test_welch_zero_spread_is_never_p_zero():
    # Every seed at the same quantized value: scipy divides by a zero standard error, p = 0.
    a, b = [1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        assert sps.ttest_ind(a, b, equal_var=False).pvalue == 0.0  # the artefact
    w = stats.welch_test(a, b)
    assert w.method == "permutation" and w.diff == 0.5
    # Exact: 8 values, 70 relabellings; only the observed split and its mirror are as extreme.
    assert w.p_value == pytest.approx(2 / math.comb(8, 4))
    assert math.isnan(w.ci_low) and math.isnan(w.ci_high)
    assert stats.welch_test([1.0, 1.0], [1.0, 1.0]).p_value == 1.0
    # Rounding noise is no spread: 10**-2.5 computed two ways differs in the last bits.
    quantized = [10**-2.5, math.pow(10, -2.5), 10**-2.5 * (1 + 1e-15)]
    assert stats.welch_test(quantized, [1e-3] * 3).method == "permutation"


def test_permutation_p_exact_and_random_never_zero():
    # Sign flips of 5 equal changes: 32 patterns, 2 as extreme.
    assert stats.permutation_p([0.03] * 5) == pytest.approx(2 / 32)
    assert stats.permutation_p([0.0] * 5) == 1.0
    # 10 vs 10 is 184,756 relabellings: random ones from a fixed seed, p > 0 and repeatable.
    p = stats.permutation_p([1.0] * 10, [0.0] * 10)
    assert 0.0 < p < 1e-3 and p == stats.permutation_p([1.0] * 10, [0.0] * 10)
    assert math.isnan(stats.permutation_p([], [1.0]))


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
    assert "n=5" in v.text and "raw p=" in v.text and "not adjusted" in v.text
    # The numbers behind the sentence, in the claimed direction.
    test = sps.ttest_ind(better, base, equal_var=False)
    assert v.p_value == pytest.approx(test.pvalue) and v.p_adjusted is None
    assert v.effect == pytest.approx(better.mean() - base.mean())
    ci = test.confidence_interval(0.95)
    assert (v.ci_low, v.ci_high) == pytest.approx((ci.low, ci.high))
    assert (v.n_a, v.n_b, v.min_effect, v.n_text) == (5, 5, 0.01, "5 vs 5")


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
    lower = stats.verdict(worse, base, higher_is_better=False)
    assert lower.label == stats.SUPPORTED
    # Lower is better: the effect and its interval are sign-flipped, the interval stays ordered.
    assert lower.effect == pytest.approx(0.2) and 0 < lower.ci_low < 0.2 < lower.ci_high


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
    assert (v.paired, v.n_a, v.n_b, v.n_text) == (True, 4, 0, "4 paired")
    ci = ref.confidence_interval(0.95)
    assert (v.ci_low, v.ci_high) == pytest.approx((ci.low, ci.high))
    assert stats.paired_verdict([0.001, -0.001, 0.0005], min_effect=0.01).label == stats.NOT_SUPPORTED


def test_significant_point_estimate_is_not_enough_the_interval_must_clear_min_effect():
    # Effect +2 points, p < 0.05, but the interval's lower bound (~+0.6) is below the smallest
    # effect that matters (1 point): the point estimate alone used to call this supported.
    base = np.array([0.80, 0.81, 0.79, 0.805, 0.795, 0.80])
    variant = base[::-1] + 0.02 + np.array([0.01, -0.01, 0.012, -0.012, 0.0, 0.0])
    v = stats.verdict(variant, base, min_effect=0.01)
    assert v.p_value < 0.05 and v.effect > 0.01 and v.ci_low < 0.01 < v.ci_high
    assert v.label == stats.INCONCLUSIVE
    assert "lower bound does not clear 0.01" in v.text
    # The same effect measured more tightly clears it.
    tight = stats.verdict(base + 0.02 + np.linspace(-1e-3, 1e-3, 6), base, min_effect=0.01)
    assert tight.ci_low > 0.01 and tight.label == stats.SUPPORTED


def test_zero_spread_verdicts_are_inconclusive_not_p_zero():
    # Every seed's "end of usable lr range" on the same logged lr: no spread on either side.
    v = stats.verdict([-1.0] * 10, [-2.0] * 10, what="log10 lr")
    assert v.label == stats.INCONCLUSIVE and v.p_value > 0
    assert "permutation" in v.method and "neither side has any spread" in v.text
    # Equal constants: p = 1, still no interval.
    same = stats.verdict([0.5] * 4, [0.5] * 4, min_effect=0.01)
    assert same.p_value == 1.0 and same.label == stats.INCONCLUSIVE
    # Opposite direction and significant: not supported needs no interval.
    assert stats.verdict([0.0] * 6, [1.0] * 6).label == stats.NOT_SUPPORTED
    paired = stats.paired_verdict([0.03] * 6, min_effect=0.005)
    assert paired.label == stats.INCONCLUSIVE and paired.p_value == pytest.approx(2 / 64)
    assert "the changes have no spread" in paired.text


@pytest.mark.filterwarnings("ignore:Precision loss occurred")  # scipy, on the reference call
def test_one_constant_side_takes_the_larger_of_welch_and_permutation_p():
    rng = np.random.default_rng(3)
    variant = 1.0 + rng.normal(0, 0.05, size=6)
    base = np.full(6, 0.98)
    v = stats.verdict(variant, base)
    welch = sps.ttest_ind(variant, base, equal_var=False).pvalue
    assert stats.welch_test(variant, base).p_value == pytest.approx(welch)  # Welch is still scipy's
    assert v.p_value == pytest.approx(max(welch, stats.permutation_p(variant, base)))
    assert "one side's values are all equal" in v.text


def test_non_finite_values_are_left_out_and_said():
    v = stats.verdict([0.9, float("nan"), 0.91, 0.92, float("inf")], [0.5, 0.51, 0.52])
    assert (v.n_a, v.n_b) == (3, 3)
    assert "2 + 0 non-finite values (diverged runs) left out" in v.text
    assert v.effect == pytest.approx(0.4)
    p = stats.paired_verdict([0.1, float("nan")])
    assert p.label == stats.INCONCLUSIVE and "1 non-finite changes left out" in p.text
    assert stats.verdict([], []).label == stats.INCONCLUSIVE


def test_adjust_verdicts_is_benjamini_hochberg_as_scipy():
    rng = np.random.default_rng(4)
    verdicts = [
        stats.verdict(rng.normal(shift, 1.0, size=8), rng.normal(0, 1.0, size=8))
        for shift in (0.0, 0.3, 0.8, 1.5, 2.5, 0.1)
    ]
    verdicts.append(stats.paired_verdict(rng.normal(1.0, 1.0, size=8)))
    verdicts.append(stats.verdict([1.0], [2.0, 3.0]))  # no test: not in the family
    adjusted = stats.adjust_verdicts(verdicts)
    raw = [v.p_value for v in verdicts[:-1]]
    expected = sps.false_discovery_control(raw, method="bh")
    np.testing.assert_allclose([v.p_adjusted for v in adjusted[:-1]], expected)
    assert [v.p_value for v in adjusted[:-1]] == raw  # the raw p is kept
    assert all(v.family == 7 for v in adjusted[:-1])
    assert adjusted[-1].p_adjusted is None and adjusted[-1] == verdicts[-1]
    assert stats.adjust_verdicts(adjusted) == adjusted  # idempotent: always from the raw p
    assert stats.adjust_verdicts([]) == []
    # Benjamini-Yekutieli (any dependence) on request, as scipy computes it.
    by = stats.adjust_verdicts(verdicts, method="by")
    np.testing.assert_allclose([v.p_adjusted for v in by[:-1]], sps.false_discovery_control(raw, method="by"))
    assert "Benjamini-Yekutieli, 7 claims" in by[0].text
    with pytest.raises(ValueError, match="method must be one of"):
        stats.adjust_verdicts(verdicts, method="bonferroni")
    # A family of one: the adjusted p is the raw p, and so is the decision.
    single = stats.adjust_verdicts(verdicts[:1])[0]
    assert single.p_adjusted == pytest.approx(single.p_value) and single.label == verdicts[0].label


def test_adjustment_decides_again_on_the_adjusted_p():
    # Alone, p ~ 0.015 is supported; among 9 null claims its adjusted p is ~ 0.15: inconclusive.
    base = np.array([0.0, 0.1, -0.1, 0.05, -0.05, 0.02])
    claim = stats.verdict(base + 0.12, base[::-1])
    assert 0.005 < claim.p_value < 0.02 and claim.label == stats.SUPPORTED
    nulls = [stats.verdict(base + 0.001 * k, base[::-1]) for k in range(9)]
    adjusted = stats.adjust_verdicts([claim] + nulls)[0]
    assert adjusted.p_adjusted > 0.05 and adjusted.label == stats.INCONCLUSIVE
    assert "adjusted p=" in adjusted.text and "Benjamini-Hochberg, 10 claims" in adjusted.text
    assert "not significant (adjusted p >= 0.05)" in adjusted.text
    # The effect and its interval do not change with the adjustment.
    assert (adjusted.effect, adjusted.ci_low, adjusted.ci_high) == (claim.effect, claim.ci_low, claim.ci_high)


def test_compare_to_baseline_adjusts_its_family():
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "norm": np.repeat(["none", "a", "b", "c"], 5),
            "acc": np.r_[
                rng.normal(0.8, 0.01, 5), rng.normal(0.9, 0.01, 5), rng.normal(0.8, 0.01, 5), rng.normal(0.81, 0.01, 5)
            ],
        }
    )
    cmp = stats.compare_to_baseline(frame, "norm", "acc", baseline="none")
    np.testing.assert_allclose(cmp["p_adjusted"], sps.false_discovery_control(cmp["p_value"], method="bh"))
    raw = stats.compare_to_baseline(frame, "norm", "acc", baseline="none", adjust=False)
    assert raw["p_adjusted"].isna().all()
