"""`normlab study`: the seed notebook's batch-norm claims, tested fairly, in one folder.

    registry.py    the parts in order and their tiers, their files (package data: configs/*.yaml), --quick
    protocol.py    the shared protocol: each variant at its own lr (held-out selection), seeds
    part1_bn.py ... part12_weight_decay.py   one module per part: its claims, tier and report section
    common.py      what the sections share
    recalibrate.py, mechanisms.py  measurements on finished runs (recalibrate_bn; ICS, landscape)
    run.py         run_study: stage 1, stage 2, recalibration, report
    report.py      the study report from the store

The study sits above `experiments` and `analysis` and imports both; neither imports it.
"""

from normlab.study.registry import PARTS, study_name
from normlab.study.run import run_study

__all__ = ["PARTS", "run_study", "study_name"]
