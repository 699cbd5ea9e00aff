"""Statistics over seeds: summaries with 95% t-intervals, Welch tests, steps-to-target, verdicts.

Every number in the report comes from here, so every function takes plain arrays or DataFrames
and returns plain numbers: no plotting, no store access.

A claim of the seed notebook ("BN gives higher accuracy") becomes a one-sided question about
the difference of two means, variant minus baseline, over independent seeds. We answer it with
Welch's t-test (unequal variances, Satterthwaite degrees of freedom) and its 95% confidence
interval of the difference, and turn that into one of three verdicts (see `verdict`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Literal

import numpy as np
from scipy import stats as _scipy_stats

__all__ = [
    "Summary",
    "WelchResult",
    "Verdict",
    "summarize",
    "t_interval",
    "welch_test",
    "verdict",
    "paired_verdict",
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


def _as_array(values: Iterable[float], what: str) -> np.ndarray:
    """1-D float64 array of the finite values (NaN = a run that has no value, e.g. diverged)."""
    array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D sequence of numbers, got shape {array.shape}")
    return array[np.isfinite(array)]


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
    """Welch's two-sample t-test of mean(a) - mean(b).

    `p_value` is two-sided; `ci_low/ci_high` the 95% interval of the difference. With fewer
    than 2 values on a side every field but `diff`, `n_a`, `n_b` is NaN.
    """

    diff: float
    t: float
    df: float
    p_value: float
    ci_low: float
    ci_high: float
    n_a: int
    n_b: int


def welch_test(a: Iterable[float], b: Iterable[float], confidence: float = 0.95) -> WelchResult:
    """Welch's t-test of mean(a) - mean(b) with Satterthwaite degrees of freedom.

    t = (mean_a - mean_b) / sqrt(s_a^2/n_a + s_b^2/n_b),
    df = (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1)).
    Equal to `scipy.stats.ttest_ind(a, b, equal_var=False)`. If both samples have zero
    variance the difference is exact: p = 0 when the means differ, 1 when they are equal.
    """
    _check_probability("confidence", confidence)
    xa, xb = _as_array(a, "welch_test a"), _as_array(b, "welch_test b")
    na, nb = int(xa.size), int(xb.size)
    nan = float("nan")
    diff = float(xa.mean() - xb.mean()) if na and nb else nan
    if na < 2 or nb < 2:
        return WelchResult(diff, nan, nan, nan, nan, nan, na, nb)
    va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
    se = math.sqrt(va + vb)
    if se == 0.0:
        # Both samples constant (e.g. every seed reached 100%): the difference is exact.
        p = 1.0 if diff == 0.0 else 0.0
        t = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        return WelchResult(diff, t, float(na + nb - 2), p, diff, diff, na, nb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    t = diff / se
    p = float(2.0 * _scipy_stats.t.sf(abs(t), df))
    half = float(_scipy_stats.t.ppf(0.5 + confidence / 2.0, df)) * se
    return WelchResult(diff, float(t), float(df), p, diff - half, diff + half, na, nb)


@dataclass(frozen=True)
class Verdict:
    """The answer to one claim: a label and the sentence with the numbers behind it."""

    label: Literal["supported", "not supported", "inconclusive"]
    text: str
    test: WelchResult


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

    Rules (difference d = mean(variant) - mean(baseline), sign-flipped if lower is better, with
    its 95% Welch interval [lo, hi] and two-sided p):
      - fewer than 2 seeds on a side: **inconclusive** (no spread, no test);
      - p < alpha and d > min_effect: **supported** (significant, in the claimed direction,
        and at least as large as the smallest effect that matters);
      - p < alpha and d < 0: **not supported** (significant in the opposite direction);
      - the whole interval lies below `min_effect` (|effect| provably smaller than what
        matters, or negative): **not supported**;
      - otherwise **inconclusive**: the seeds cannot tell the effect from the noise.
    `min_effect` is in the metric's units (e.g. 0.01 = one accuracy point).
    The sentence reports n, means, the difference with its interval and p.
    """
    # Read each iterable once: a generator would be empty for a second pass.
    xv, xb = _as_array(variant, "verdict variant"), _as_array(baseline, "verdict baseline")
    test = welch_test(xv, xb)
    fmt = _formatter(scale, unit)
    head = (
        f"{what}: {fmt(summarize(xv).mean)} vs {fmt(summarize(xb).mean)} baseline "
        f"(n={test.n_a} vs n={test.n_b} seeds)"
    )
    return _decide(test, head, higher_is_better, min_effect, alpha, fmt, f"n={test.n_a} vs n={test.n_b}")


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
    model), tested against zero with the one-sample t-test (Welch's test against a constant
    reduces to it: df = n - 1). Same rules as `verdict`, "variant" = the change.
    """
    values = _as_array(changes, "paired_verdict")
    test = welch_test(values, np.zeros_like(values))
    fmt = _formatter(scale, unit)
    head = f"{what}: mean change {fmt(summarize(values).mean)} (n={test.n_a} paired runs)"
    return _decide(test, head, higher_is_better, min_effect, alpha, fmt, f"n={test.n_a} runs")


def _formatter(scale: float, unit: str):
    return lambda x: f"{x * scale:.3g}{unit}"


def _decide(test: WelchResult, head: str, higher_is_better: bool, min_effect: float,
            alpha: float, fmt, sample: str) -> Verdict:
    """The rules of `verdict`, applied to a finished test; `head` starts the sentence."""
    _check_probability("alpha", alpha)
    if min_effect < 0:
        raise ValueError(f"min_effect must be >= 0 (an effect size in the metric's units), got {min_effect}")
    if test.n_a < 2 or test.n_b < 2:
        return Verdict(INCONCLUSIVE, head + "; fewer than 2 values on a side, so no test is possible.", test)
    sign = 1.0 if higher_is_better else -1.0
    # Effect in the claimed direction and its interval, in the claimed direction too.
    effect = sign * test.diff
    lo, hi = sorted((sign * test.ci_low, sign * test.ci_high))
    better = "higher" if higher_is_better else "lower"
    detail = (
        f"; difference {fmt(test.diff)} [95% CI {fmt(test.ci_low)}, {fmt(test.ci_high)}], "
        f"p={test.p_value:.2g}"
    )
    if test.p_value < alpha and effect > min_effect:
        return Verdict(SUPPORTED, head + detail + f": significantly {better}.", test)
    if test.p_value < alpha and effect < 0:
        worse = "lower" if higher_is_better else "higher"
        return Verdict(NOT_SUPPORTED, head + detail + f": significantly {worse}, the opposite of the claim.", test)
    if hi < min_effect or (min_effect == 0.0 and hi <= 0.0):
        return Verdict(
            NOT_SUPPORTED,
            head + detail + (f": the interval excludes an improvement of {fmt(min_effect)} or more."
                             if min_effect > 0 else ": the interval excludes any improvement."),
            test,
        )
    return Verdict(
        INCONCLUSIVE,
        head + detail + f": not distinguishable from noise at {sample}.",
        test,
    )


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
):
    """Welch test and verdict of every group against the `baseline` group (one row per seed in).

    Returns a DataFrame: group, n, mean, diff, ci_low, ci_high, p_value, verdict, text.
    """
    import pandas as pd

    if group not in frame.columns or value not in frame.columns:
        raise ValueError(f"compare_to_baseline: need columns {group!r} and {value!r}, got {list(frame.columns)}")
    groups = frame[group].astype(str)
    if baseline not in set(groups):
        raise ValueError(
            f"compare_to_baseline: baseline {baseline!r} is not a value of {group!r} "
            f"(values: {sorted(set(groups))})"
        )
    base_values = frame.loc[groups == baseline, value].to_numpy()
    rows = []
    for name in sorted(set(groups) - {baseline}):
        values = frame.loc[groups == name, value].to_numpy()
        v = verdict(values, base_values, higher_is_better=higher_is_better, min_effect=min_effect,
                    alpha=alpha, what=f"{name} vs {baseline}")
        s = summarize(values)
        rows.append({group: name, "n": s.n, "mean": s.mean, "diff": v.test.diff, "ci_low": v.test.ci_low,
                     "ci_high": v.test.ci_high, "p_value": v.test.p_value, "verdict": v.label, "text": v.text})
    return pd.DataFrame(rows, columns=[group, "n", "mean", "diff", "ci_low", "ci_high", "p_value", "verdict", "text"])
