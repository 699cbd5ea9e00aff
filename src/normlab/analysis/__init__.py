"""The analysis layer: the store -> statistics over seeds, figures and reports (general-purpose:
the study's sections live in `normlab.study`, which builds on this layer).

`stats` (means, 95% t-intervals, Welch and permutation tests, verdicts and their
Benjamini-Hochberg adjustment), `palette` (one colour per variant), `plots` (one function per figure),
`frames` (tidy frames from the store's tables), `render` (HTML/Markdown) and `report`
(`write_report`, `build_report`). It reads only the store.
"""

from normlab.analysis.stats import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    Summary,
    Verdict,
    WelchResult,
    adjust_verdicts,
    aggregate,
    compare_to_baseline,
    one_sample_test,
    paired_verdict,
    permutation_p,
    steps_to_target,
    summarize,
    t_interval,
    verdict,
    welch_test,
)

__all__ = [
    "INCONCLUSIVE",
    "NOT_SUPPORTED",
    "SUPPORTED",
    "Summary",
    "Verdict",
    "WelchResult",
    "adjust_verdicts",
    "aggregate",
    "compare_to_baseline",
    "one_sample_test",
    "paired_verdict",
    "permutation_p",
    "steps_to_target",
    "summarize",
    "t_interval",
    "verdict",
    "welch_test",
    "write_report",
]


def __getattr__(name: str):
    # report pulls in matplotlib and pandas: loaded on first use, not on `import normlab.analysis`
    if name == "write_report":
        from normlab.analysis.report import write_report

        return write_report
    raise AttributeError(f"module 'normlab.analysis' has no attribute {name!r}")
