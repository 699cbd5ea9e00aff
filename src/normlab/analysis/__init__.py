"""The analysis layer: the store -> statistics over seeds, figures and reports (general-purpose:
the study's sections live in `normlab.study`, which builds on this layer).

`stats` (means, 95% t-intervals, Welch and permutation tests, verdicts and their
Benjamini-Hochberg adjustment), `palette` (one colour per variant), `plots` (one function per figure),
`frames` (tidy frames from the store's tables), `render` (HTML/Markdown) and `report`
(`write_report`, `build_report`). It reads only the store.
"""

from typing import TYPE_CHECKING

from normlab._lazy import lazy_exports

# scipy (stats) and matplotlib/pandas (report) load on first use, not on `import normlab.analysis`
_LAZY = {
    "INCONCLUSIVE": "normlab.analysis.stats",
    "NOT_SUPPORTED": "normlab.analysis.stats",
    "SUPPORTED": "normlab.analysis.stats",
    "Summary": "normlab.analysis.stats",
    "Verdict": "normlab.analysis.stats",
    "WelchResult": "normlab.analysis.stats",
    "adjust_verdicts": "normlab.analysis.stats",
    "aggregate": "normlab.analysis.stats",
    "compare_to_baseline": "normlab.analysis.stats",
    "one_sample_test": "normlab.analysis.stats",
    "paired_verdict": "normlab.analysis.stats",
    "permutation_p": "normlab.analysis.stats",
    "steps_to_target": "normlab.analysis.stats",
    "summarize": "normlab.analysis.stats",
    "t_interval": "normlab.analysis.stats",
    "verdict": "normlab.analysis.stats",
    "welch_test": "normlab.analysis.stats",
    "write_report": "normlab.analysis.report",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

if TYPE_CHECKING:  # what type checkers and IDEs see; _LAZY is what runs
    from normlab.analysis.report import write_report
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
