"""Statistics over seeds: summaries with 95% t-intervals, tests, steps-to-target, verdicts.

Every number in the report comes from here, so every function takes plain arrays or DataFrames
and returns plain numbers: no plotting, no store access.

A claim of the seed notebook ("BN gives higher accuracy") becomes a question about the
difference of two means, variant minus baseline, over independent seeds. We answer it with
Welch's t-test (unequal variances, Satterthwaite degrees of freedom) and its 95% confidence
interval of the difference, and turn that into one of three verdicts (see `verdict`). A study
asks many such questions at once: `adjust_verdicts` applies the Benjamini-Hochberg adjustment
across all of them and decides each claim again on its adjusted p.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
from scipy import stats as _scipy_stats

__all__ = [
    "Summary",
    "WelchResult",
    "Verdict",
    "summarize",
    "t_interval",
    "welch_test",
    "one_sample_test",
    "permutation_p",
    "verdict",
    "paired_verdict",
    "adjust_verdicts",
    "steps_to_target",
    "aggregate",
    "compare_to_baseline",
    "SUPPORTED",
    "NOT_SUPPORTED",
    "INCONCLUSIVE",
]

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"

# Permutation tests enumerate every relabelling when there are at most this many (exact p),
# else draw this many random relabellings from a fixed seed (the same p on every run).
_EXACT_PERMUTATIONS = 20_000
_RANDOM_PERMUTATIONS = 9_999


def _as_array(values: Iterable[float], what: str) -> np.ndarray:
    """1-D float64 array of the finite values (NaN = a run that has no value, e.g. diverged)."""
    return _finite(values, what)[0]


def _finite(values: Iterable[float], what: str) -> tuple[np.ndarray, int]:
    """(the finite values as a 1-D float64 array, how many non-finite values were left out)."""
    array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D sequence of numbers, got shape {array.shape}")
    keep = np.isfinite(array)
    return array[keep], int(array.size - keep.sum())


def _is_constant(x: np.ndarray) -> bool:
    """Every value equal up to float rounding (a quantized measurement, or a bound such as 100%).

    A spread of a few ulps (e.g. 10**-2.5 computed two ways) is no spread: a t-test on it would
    divide the difference by rounding noise and report p ~ 0.
    """
    return x.size > 0 and float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.abs(x).max()))


def _check_probability(name: str, value: float) -> None:
    """Refuse a confidence level or alpha outside (0, 1) (e.g. 95 meant as 0.95)."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (ddof=1) and the 95% t-interval of the mean over n seeds.

    With n = 1 the std and the interval are NaN (one seed says nothing about spread).
    """

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float

    @property
    def half_width(self) -> float:
        """Half the width of the confidence interval (the "+-" in "mean +- hw")."""
        return (self.ci_high - self.ci_low) / 2.0

    def format(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        """`"0.912 +- 0.010 (n=3)"`; `scale=100, unit="%"` prints percentages."""
        if self.n == 0:
            return "no data (n=0)"
        mean = self.mean * scale
        if self.n == 1 or not math.isfinite(self.half_width):
            return f"{mean:.{digits}f}{unit} (n=1)"
        return f"{mean:.{digits}f}{unit} +- {self.half_width * scale:.{digits}f}{unit} (n={self.n})"


def t_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided t confidence interval of the mean: mean +- t_{n-1, (1+c)/2} * s / sqrt(n)."""
    s = summarize(values, confidence)
    return s.ci_low, s.ci_high


def summarize(values: Iterable[float], confidence: float = 0.95) -> Summary:
    """Summary of the finite values (NaN/inf are dropped: they are runs without a number)."""
    _check_probability("confidence", confidence)
    x = _as_array(values, "summarize")
    n = int(x.size)
    if n == 0:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan)
    mean = float(x.mean())
    if n == 1:
        nan = float("nan")
        return Summary(1, mean, nan, nan, nan)
    std = float(x.std(ddof=1))
    half = float(_scipy_stats.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class WelchResult:
    """A two-sample test of mean(a) - mean(b) (or a one-sample test of mean(a) against 0).

    `p_value` is two-sided; `ci_low/ci_high` the 95% interval of the difference. With fewer
    than 2 values on a side every field but `diff`, `n_a`, `n_b` is NaN. `method` names the
    test that gave `p_value`: "welch", "one-sample t", or "permutation" when every value on
    both sides is equal (then there is no spread to build an interval from: it is NaN).
    """

    diff: float
    t: float
    df: float
    p_value: float
    ci_low: float
    ci_high: float
    n_a: int
    n_b: int
    method: str = "welch"


def permutation_p(a: Iterable[float], b: Iterable[float] | None = None) -> float:
    """Two-sided permutation-test p of mean(a) - mean(b), from `scipy.stats.permutation_test`.

    Two samples: the values are relabelled between the sides. One sample (`b=None`, e.g. the
    per-run changes of a paired design): each value's sign is flipped. The test needs no
    spread, so it gives an honest p where a t-test divides by a zero standard error. Exact
    (every relabelling) up to 20,000 relabellings, else 9,999 random ones from a fixed seed;
    either way p >= 1 / (number of relabellings), never 0.
    """
    x = _as_array(a, "permutation_p a")
    y = np.zeros_like(x) if b is None else _as_array(b, "permutation_p b")
    if x.size == 0 or y.size == 0:
        return float("nan")
    paired = b is None
    count = 2.0**x.size if paired else math.comb(x.size + y.size, x.size)
    resamples = np.inf if count <= _EXACT_PERMUTATIONS else _RANDOM_PERMUTATIONS

    def mean_diff(u, v, axis):
        return np.mean(u, axis=axis) - np.mean(v, axis=axis)

    kwargs = dict(
        vectorized=True,
        n_resamples=resamples,
        alternative="two-sided",
        batch=1000,
        permutation_type="samples" if paired else "independent",
    )
    try:
        result = _scipy_stats.permutation_test((x, y), mean_diff, rng=np.random.default_rng(0), **kwargs)
    except TypeError:  # scipy < 1.15 names the generator random_state
        result = _scipy_stats.permutation_test((x, y), mean_diff, random_state=np.random.default_rng(0), **kwargs)
    return float(min(1.0, result.pvalue))


def welch_test(a: Iterable[float], b: Iterable[float], confidence: float = 0.95) -> WelchResult:
    """Welch's t-test of mean(a) - mean(b) with Satterthwaite degrees of freedom.

    t = (mean_a - mean_b) / sqrt(s_a^2/n_a + s_b^2/n_b),
    df = (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1)).
    Equal to `scipy.stats.ttest_ind(a, b, equal_var=False)`, except when every value on both
    sides is equal (e.g. a quantized measurement): scipy then reports t = inf and p = 0, an
    artefact of dividing by a zero standard error; here p comes from `permutation_p` and the
    interval is NaN (there is no spread to build it from).
    """
    _check_probability("confidence", confidence)
    xa, xb = _as_array(a, "welch_test a"), _as_array(b, "welch_test b")
    na, nb = int(xa.size), int(xb.size)
    nan = float("nan")
    diff = float(xa.mean() - xb.mean()) if na and nb else nan
    if na < 2 or nb < 2:
        return WelchResult(diff, nan, nan, nan, nan, nan, na, nb)
    if _is_constant(xa) and _is_constant(xb):
        return WelchResult(diff, nan, nan, permutation_p(xa, xb), nan, nan, na, nb, "permutation")
    va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    t = diff / se
    p = float(2.0 * _scipy_stats.t.sf(abs(t), df))
    half = float(_scipy_stats.t.ppf(0.5 + confidence / 2.0, df)) * se
    return WelchResult(diff, float(t), float(df), p, diff - half, diff + half, na, nb)


def one_sample_test(values: Iterable[float], confidence: float = 0.95) -> WelchResult:
    """The one-sample t-test of mean(values) against 0 (df = n - 1), as `scipy.stats.ttest_1samp`.

    For paired designs: `values` are per-run changes (after - before). `n_b` is 0. When every
    change is equal the p comes from the sign-flip `permutation_p` and the interval is NaN.
    """
    _check_probability("confidence", confidence)
    x = _as_array(values, "one_sample_test")
    n = int(x.size)
    nan = float("nan")
    mean = float(x.mean()) if n else nan
    if n < 2:
        return WelchResult(mean, nan, nan, nan, nan, nan, n, 0, "one-sample t")
    if _is_constant(x):
        return WelchResult(mean, nan, nan, permutation_p(x), nan, nan, n, 0, "permutation")
    se = float(x.std(ddof=1)) / math.sqrt(n)
    t = mean / se
    p = float(2.0 * _scipy_stats.t.sf(abs(t), n - 1))
    half = float(_scipy_stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * se
    return WelchResult(mean, float(t), float(n - 1), p, mean - half, mean + half, n, 0, "one-sample t")


@dataclass(frozen=True)
class Verdict:
    """The answer to one claim: a label, the sentence with the numbers, and those numbers.

    `effect` and its interval `ci_low/ci_high` are in the claimed direction (positive = the way
    the claim says, whether higher or lower is better) and in the metric's units; `p_value` is
    the raw two-sided p, `p_adjusted` the Benjamini-Hochberg p over `family` claims (None until
    `adjust_verdicts` ran). The label is decided on `p_adjusted` when there is one, else on
    `p_value` (a claim tested alone is a family of one, whose BH-adjusted p is its raw p).
    """

    label: Literal["supported", "not supported", "inconclusive"]
    text: str
    test: WelchResult
    effect: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    p_value: float = float("nan")
    p_adjusted: float | None = None
    family: int | None = None
    adjustment: str = ""  # the method behind p_adjusted, e.g. "Benjamini-Hochberg"
    min_effect: float = 0.0
    n_a: int = 0  # values of the variant (or paired runs)
    n_b: int = 0  # values of the baseline (0 for a paired design)
    paired: bool = False
    method: str = ""
    notes: tuple[str, ...] = ()  # what the reader must know about the numbers (left-out values, ...)
    head: str = ""  # the sentence's start: what was measured, the means, n
    higher_is_better: bool = True
    alpha: float = 0.05
    scale: float = 1.0
    unit: str = ""

    @property
    def p_decision(self) -> float:
        """The p the label is decided on: adjusted when adjusted, else raw."""
        return self.p_value if self.p_adjusted is None else self.p_adjusted

    @property
    def n_text(self) -> str:
        """Sample sizes as the report prints them: "10 vs 10" or "10 paired"."""
        return f"{self.n_a} paired" if self.paired else f"{self.n_a} vs {self.n_b}"

    def fmt(self, value: float, signed: bool = False) -> str:
        """A value of the metric in display units (e.g. "+1.2%"); "-" when not finite."""
        if value is None or not math.isfinite(value):
            return "-"
        # (+ 0.0 turns a negative zero into "0", not "-0")
        return f"{value * self.scale + 0.0:{'+' if signed else ''}.3g}{self.unit}"


def verdict(
    variant: Iterable[float],
    baseline: Iterable[float],
    *,
    higher_is_better: bool = True,
    min_effect: float = 0.0,
    alpha: float = 0.05,
    what: str = "the metric",
    scale: float = 1.0,
    unit: str = "",
) -> Verdict:
    """Decide a claim "variant is better than baseline" from per-seed values.

    The effect e = mean(variant) - mean(baseline), sign-flipped when lower is better, comes with
    its 95% Welch interval [lo, hi] (in the claimed direction too) and a two-sided p. The rules:
      - fewer than 2 finite values on a side: **inconclusive** (no spread, no test);
      - p < alpha and e < 0: **not supported** (significant in the opposite direction);
      - p < alpha and lo > min_effect: **supported** (significant, and even the interval's
        lower bound lies above the smallest effect that matters);
      - hi < min_effect (or hi <= 0 when min_effect is 0): **not supported** (the interval
        rules out an effect that matters);
      - otherwise **inconclusive** at this many seeds, with the reason (not significant, or the
        interval reaches below `min_effect`, or no interval because no side has any spread).
    p here is the raw p: a claim tested alone is a family of one. A study tests many claims and
    passes all their verdicts through `adjust_verdicts`, which decides each again on its
    Benjamini-Hochberg-adjusted p. `min_effect` is in the metric's units (0.01 = one accuracy
    point). Non-finite values (a diverged run) are left out and the sentence says how many.
    When one side has no spread the p is the larger of Welch's and a permutation test's (Welch
    then treats that side's mean as exact); when neither has, the permutation p alone and no
    interval, so the claim cannot be supported (`welch_test`).
    """
    # Read each iterable once: a generator would be empty for a second pass.
    xv, dropped_v = _finite(variant, "verdict variant")
    xb, dropped_b = _finite(baseline, "verdict baseline")
    test = welch_test(xv, xb)
    notes = []
    if dropped_v or dropped_b:
        notes.append(f"{dropped_v} + {dropped_b} non-finite values (diverged runs) left out")
    method = "Welch t-test"
    p = test.p_value
    if test.method == "permutation":
        method = "permutation test"
        notes.append("every value on both sides is equal (a quantized or saturated measurement?)")
    elif xv.size >= 2 and xb.size >= 2 and (_is_constant(xv) or _is_constant(xb)):
        p = max(p, permutation_p(xv, xb))
        method = "Welch t-test and permutation test"
        notes.append("one side's values are all equal: p is the larger of the two tests'")
    sign = 1.0 if higher_is_better else -1.0
    lo, hi = sorted((sign * test.ci_low, sign * test.ci_high))
    head = (
        f"{what}: {_plain(_mean(xv), scale, unit)} vs {_plain(_mean(xb), scale, unit)} "
        f"baseline (n={test.n_a} vs n={test.n_b} seeds)"
    )
    return _decide(
        Verdict(
            INCONCLUSIVE,
            "",
            test,
            effect=sign * test.diff,
            ci_low=lo,
            ci_high=hi,
            p_value=p,
            min_effect=min_effect,
            n_a=test.n_a,
            n_b=test.n_b,
            method=method,
            notes=tuple(notes),
            head=head,
            higher_is_better=higher_is_better,
            alpha=alpha,
            scale=scale,
            unit=unit,
        )
    )


def paired_verdict(
    changes: Iterable[float],
    *,
    higher_is_better: bool = True,
    min_effect: float = 0.0,
    alpha: float = 0.05,
    what: str = "the change",
    scale: float = 1.0,
    unit: str = "",
) -> Verdict:
    """`verdict` for paired measurements: one change per run (e.g. after - before on the same
    model), tested against zero with the one-sample t-test (`one_sample_test`, df = n - 1).
    Same rules as `verdict`, "variant" = the change; when every change is equal, the sign-flip
    permutation p and no interval.
    """
    values, dropped = _finite(changes, "paired_verdict")
    test = one_sample_test(values)
    notes = [f"{dropped} non-finite changes left out"] if dropped else []
    method = "paired t-test"
    if test.method == "permutation":
        method = "sign-flip permutation test"
        notes.append("every change is equal (a quantized or saturated measurement?)")
    sign = 1.0 if higher_is_better else -1.0
    lo, hi = sorted((sign * test.ci_low, sign * test.ci_high))
    head = f"{what}: mean change {_plain(_mean(values), scale, unit)} (n={test.n_a} paired runs)"
    return _decide(
        Verdict(
            INCONCLUSIVE,
            "",
            test,
            effect=sign * test.diff,
            ci_low=lo,
            ci_high=hi,
            p_value=test.p_value,
            min_effect=min_effect,
            n_a=test.n_a,
            n_b=0,
            paired=True,
            method=method,
            notes=tuple(notes),
            head=head,
            higher_is_better=higher_is_better,
            alpha=alpha,
            scale=scale,
            unit=unit,
        )
    )


_ADJUSTMENTS = {"bh": "Benjamini-Hochberg", "by": "Benjamini-Yekutieli"}


def adjust_verdicts(verdicts: Sequence[Verdict], method: str = "bh") -> list[Verdict]:
    """Adjust the p of every claim of a study together for multiple comparisons; decide each again.

    The family is every verdict with a finite raw p (a claim with fewer than 2 values on a side
    has no test and keeps `p_adjusted=None`). The adjusted p are
    `scipy.stats.false_discovery_control(p, method=method)`: "bh" (Benjamini-Hochberg, the
    default) controls the false discovery rate at 5% for independent or positively dependent
    tests (claims sharing a baseline group); "by" (Benjamini-Yekutieli) under any dependence, at
    a cost in power. Each label and sentence is then decided on them by the rules of `verdict`.
    Idempotent: it always starts from the raw p. Returns new verdicts, same order.
    """
    if method not in _ADJUSTMENTS:
        raise ValueError(f"adjust_verdicts: method must be one of {sorted(_ADJUSTMENTS)}, got {method!r}")
    verdicts = list(verdicts)
    tested = [i for i, v in enumerate(verdicts) if v.head and math.isfinite(v.p_value)]
    if not tested:
        return verdicts
    adjusted = _scipy_stats.false_discovery_control([verdicts[i].p_value for i in tested], method=method)
    for i, p in zip(tested, np.atleast_1d(adjusted)):
        verdicts[i] = _decide(
            replace(verdicts[i], p_adjusted=float(p), family=len(tested), adjustment=_ADJUSTMENTS[method])
        )
    return verdicts


def _mean(x: np.ndarray) -> float:
    """Mean of the finite values (NaN when there are none)."""
    return float(x.mean()) if x.size else float("nan")


def _plain(value: float, scale: float, unit: str) -> str:
    return f"{value * scale:.3g}{unit}"


def _decide(v: Verdict) -> Verdict:
    """The rules of `verdict` applied to the numbers in `v`: its label and sentence."""
    _check_probability("alpha", v.alpha)
    if not v.min_effect >= 0:
        raise ValueError(f"min_effect must be >= 0 (an effect size in the metric's units), got {v.min_effect}")
    notes = "".join(f"; {note}" for note in v.notes)
    if v.n_a < 2 or (not v.paired and v.n_b < 2):
        return replace(
            v, label=INCONCLUSIVE, text=v.head + notes + "; fewer than 2 values on a side, so no test is possible."
        )
    better = "higher" if v.higher_is_better else "lower"
    if v.p_adjusted is None:
        ps = f"raw p={v.p_value:.2g} (a single claim, not adjusted)"
    else:
        ps = f"raw p={v.p_value:.2g}, adjusted p={v.p_adjusted:.2g} ({v.adjustment}, {v.family} claims)"
    detail = (
        f"; effect {v.fmt(v.effect, signed=True)} in the claimed direction ({better} is better), "
        f"95% CI [{v.fmt(v.ci_low, signed=True)}, {v.fmt(v.ci_high, signed=True)}], smallest effect "
        f"that matters {v.fmt(v.min_effect)}; {v.method}, {ps}{notes}"
    )
    p, lo, hi, m = v.p_decision, v.ci_low, v.ci_high, v.min_effect
    significant = p < v.alpha
    has_interval = math.isfinite(lo) and math.isfinite(hi)
    sample = f"n={v.n_text}"
    if significant and v.effect < 0:
        worse = "lower" if v.higher_is_better else "higher"
        return replace(
            v, label=NOT_SUPPORTED, text=v.head + detail + f": significantly {worse}, the opposite of the claim."
        )
    if significant and has_interval and lo > m:
        return replace(
            v,
            label=SUPPORTED,
            text=v.head + detail + f": significantly {better}, "
            "and the whole interval clears the smallest effect that matters.",
        )
    if has_interval and (hi < m or (m == 0.0 and hi <= 0.0)):
        why = (
            f"the interval excludes an improvement of {v.fmt(m)} or more"
            if m > 0
            else "the interval excludes any improvement"
        )
        return replace(v, label=NOT_SUPPORTED, text=v.head + detail + f": {why}.")
    if not has_interval:
        spread = "the changes have no spread" if v.paired else "neither side has any spread"
        why = f"{spread}, so there is no interval to hold against the smallest effect that matters"
    elif not significant:
        which = "adjusted" if v.p_adjusted is not None else "raw"
        why = f"not significant ({which} p >= {v.alpha:g})"
    else:
        why = f"significant, but the interval's lower bound does not clear {v.fmt(m)}"
    return replace(v, label=INCONCLUSIVE, text=v.head + detail + f": inconclusive at {sample}: {why}.")


def steps_to_target(steps: Iterable[float], values: Iterable[float], target: float) -> float:
    """First step at which `values` reaches `target` (>=); NaN if it never does.

    `steps` and `values` are one run's curve (e.g. test accuracy at each evaluation).
    """
    s = np.asarray(list(steps), dtype=float)
    v = np.asarray(list(values), dtype=float)
    if s.shape != v.shape:
        raise ValueError(f"steps_to_target: steps and values must have the same length, got {s.shape} and {v.shape}")
    order = np.argsort(s, kind="stable")
    s, v = s[order], v[order]
    hit = np.nonzero(v >= target)[0]
    return float(s[hit[0]]) if hit.size else float("nan")


def aggregate(frame, by: str | list[str], value: str, confidence: float = 0.95):
    """Per group of `by`: n, mean, std, ci_low, ci_high of column `value` (one row per seed in).

    Returns a DataFrame with the `by` columns and those five, sorted by `by`.
    """
    import pandas as pd

    keys = [by] if isinstance(by, str) else list(by)
    missing = [c for c in keys + [value] if c not in frame.columns]
    if missing:
        raise ValueError(f"aggregate: columns {missing} not in the frame (it has {list(frame.columns)})")
    rows = []
    for key, group in frame.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        s = summarize(group[value].to_numpy(), confidence)
        rows.append({**dict(zip(keys, key)), **asdict(s)})  # n, mean, std, ci_low, ci_high
    return pd.DataFrame(rows, columns=keys + ["n", "mean", "std", "ci_low", "ci_high"])


def compare_to_baseline(
    frame,
    group: str,
    value: str,
    baseline: str,
    *,
    higher_is_better: bool = True,
    min_effect: float = 0.0,
    alpha: float = 0.05,
    adjust: bool = True,
):
    """Welch test and verdict of every group against the `baseline` group (one row per seed in).

    The comparisons are a family: with `adjust` (the default) their p are Benjamini-Hochberg
    adjusted together (`adjust_verdicts`) and the verdicts decided on the adjusted p.
    Returns a DataFrame: group, n, mean, diff, ci_low, ci_high, p_value, p_adjusted, verdict, text
    (`diff` and its interval are variant minus baseline, not sign-flipped).
    """
    import pandas as pd

    if group not in frame.columns or value not in frame.columns:
        raise ValueError(f"compare_to_baseline: need columns {group!r} and {value!r}, got {list(frame.columns)}")
    groups = frame[group].astype(str)
    if baseline not in set(groups):
        raise ValueError(
            f"compare_to_baseline: baseline {baseline!r} is not a value of {group!r} (values: {sorted(set(groups))})"
        )
    base_values = frame.loc[groups == baseline, value].to_numpy()
    names = sorted(set(groups) - {baseline})
    verdicts = [
        verdict(
            frame.loc[groups == name, value].to_numpy(),
            base_values,
            higher_is_better=higher_is_better,
            min_effect=min_effect,
            alpha=alpha,
            what=f"{name} vs {baseline}",
        )
        for name in names
    ]
    if adjust:
        verdicts = adjust_verdicts(verdicts)
    columns = [group, "n", "mean", "diff", "ci_low", "ci_high", "p_value", "p_adjusted", "verdict", "text"]
    rows = []
    for name, v in zip(names, verdicts):
        s = summarize(frame.loc[groups == name, value].to_numpy())
        rows.append(
            {
                group: name,
                "n": s.n,
                "mean": s.mean,
                "diff": v.test.diff,
                "ci_low": v.test.ci_low,
                "ci_high": v.test.ci_high,
                "p_value": v.p_value,
                "p_adjusted": float("nan") if v.p_adjusted is None else v.p_adjusted,
                "verdict": v.label,
                "text": v.text,
            }
        )
    return pd.DataFrame(rows, columns=columns)
