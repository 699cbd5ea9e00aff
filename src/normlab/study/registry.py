"""The study's parts in order, their files (package data), their tier and the `--quick` shrink.

Each part is a module `normlab.study.part<n>_<key>` with KEY, FILE, QUICK and `section`, and
optionally TIER ("default" when absent, or "full"); its file is `normlab/study/configs/<FILE>`,
read with `importlib.resources`, so the study runs from an installed wheel as from a source
checkout.

Tiers: `normlab study` runs the default parts (about 6 minutes on a 2-core CPU);
`normlab study --tier full` runs every part (at most 30 minutes there) as the study
"study-full", reusing every run the default tier already stored (same config, same run id).
"""

from __future__ import annotations

import copy
from importlib import resources
from types import ModuleType
from typing import Any

import yaml

from normlab.experiments.errors import ConfigError
from normlab.study import (
    part1_bn,
    part2_batch_size,
    part3_lr_init,
    part4_costs,
    part5_ioffe2015,
    part6_noniid,
    part7_anatomy,
    part8_ics,
    part9_notebook,
    part10_conv,
    part11_depth,
    part12_weight_decay,
)
from normlab.study.protocol import PartSpec, Protocol, parse_part

PARTS: tuple[ModuleType, ...] = (
    part1_bn,
    part2_batch_size,
    part3_lr_init,
    part4_costs,
    part5_ioffe2015,
    part6_noniid,
    part7_anatomy,
    part8_ics,
    part9_notebook,
    part10_conv,
    part11_depth,
    part12_weight_decay,
)
"""    1 bn            with vs without BN; convergence; regularization (ghost batches, weight decay)
    2 batch_size    16/64/256 at equal epochs and equal steps; batch size 4 with GN/LN/BRN
    3 lr_init       LR range test; init x5; gradient flow over depth 2-16
    4 costs         time per step; eval-mode minus train-mode accuracy; recalibrate_bn
    5 ioffe2015     Ioffe & Szegedy 2015 Fig. 1 with the probe before normalization
    6 noniid        class-grouped batches (2 classes; 8 classes x 4), Batch Renorm
    7 anatomy       what BN computes on a trained layer; gamma and beta (affine off)
    8 ics           internal covariate shift as Santurkar et al. 2018 measure it, over training; noisy BN;
                    smoothness
    9 notebook      the seed notebook's protocol as it ran (Adam 1e-3, 2 epochs; batch 32/64/128), its mistakes
   full tier:
   10 conv          the 1-D CNN: none/batch/group/layer/instance/batch_renorm, batch 2 to 128; fold, recalibrate
   11 depth         depth 2-16 x none/batch at own lrs; gradients at init and in training; init scale
   12 weight_decay  weight decay through the effective lr lr/||W||^2; Li & Arora's exponential lr"""

TIERS = ("default", "full")
FULL_TIER_COMMAND = "normlab study --tier full"


def tier_of(part: ModuleType) -> str:
    return getattr(part, "TIER", "default")


def parts_for(tier: str = "default") -> tuple[ModuleType, ...]:
    """The parts a study of `tier` runs: the default ones, or all of them."""
    check_tier(tier)
    return PARTS if tier == "full" else tuple(p for p in PARTS if tier_of(p) == "default")


def check_tier(tier: str) -> None:
    if tier not in TIERS:
        raise ConfigError(
            f"--tier: expected one of {', '.join(TIERS)}, got {tier!r} (default: the default parts; full: every part)"
        )


QUICK_PROTOCOL = Protocol(lr_grid=(1.0e-3, 3.0e-3, 1.0e-2), selection_seeds=(1000,), eval_seeds=(0, 1))
"""`--quick`: 3 lrs, 1 selection seed, 2 evaluation seeds (a smoke test, not evidence)."""
DEFAULT_PROTOCOL = Protocol()


def config_text(part: ModuleType) -> str:
    """The part's file as shipped in the package."""
    return resources.files("normlab.study").joinpath("configs", part.FILE).read_text(encoding="utf-8")


def read_spec(part: ModuleType) -> dict[str, Any]:
    where = f"normlab/study/configs/{part.FILE}"
    try:
        spec = yaml.safe_load(config_text(part))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(spec).__name__}")
    return spec


def shrink(spec: dict[str, Any], quick: dict[str, Any]) -> dict[str, Any]:
    """`--quick`: keep the variants listed in quick["keep"] (all when absent), then set
    quick["set"] on every tuned variant and arm, and quick["set_fixed"] (default: "set") on
    every fixed one."""
    spec = copy.deepcopy(spec)
    keep = quick.get("keep")
    tuned_set = quick.get("set", {})
    fixed_set = quick.get("set_fixed", tuned_set)
    for section, changes in (("variants", tuned_set), ("arms", tuned_set), ("fixed", fixed_set)):
        entries = spec.get(section) or {}
        spec[section] = {
            label: {**entry, **changes} for label, entry in entries.items() if keep is None or label in keep
        }
    if keep is not None and spec.get("recalibrate"):
        spec["recalibrate"] = [label for label in spec["recalibrate"] if label in keep]
    return spec


def dataset_part(spec: dict[str, Any], dataset: str) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    spec.setdefault("base", {})["dataset"] = dataset
    return spec


def load_part(part: ModuleType, dataset: str = "mnist1d", quick: bool = False) -> PartSpec:
    """The validated spec of one part (quick-shrunk if asked), on `dataset`."""
    spec = read_spec(part)
    if quick:
        spec = shrink(spec, part.QUICK)
    protocol = QUICK_PROTOCOL if quick else DEFAULT_PROTOCOL
    return parse_part(part.KEY, dataset_part(spec, dataset), protocol, where=f"{part.FILE}: ")


def protocol_for(quick: bool) -> Protocol:
    return QUICK_PROTOCOL if quick else DEFAULT_PROTOCOL


def study_name(dataset: str = "mnist1d", quick: bool = False, tier: str = "default") -> str:
    """ "study", "study-quick", "study-full", "study-quick-full-cifar10", ...: the smoke test, the
    full tier and another dataset never mix into the default study's report."""
    check_tier(tier)
    name = "study" + ("-quick" if quick else "") + ("-full" if tier == "full" else "")
    return name if dataset == "mnist1d" else f"{name}-{dataset}"


def full_tier_name(name: str) -> str:
    """The full tier's study beside the default-tier study `name` ("study-quick" -> "study-quick-full")."""
    words = name.split("-")
    at = 2 if len(words) > 1 and words[1] == "quick" else 1
    return "-".join(words[:at] + ["full"] + words[at:])


def tier_of_study(name: str) -> str:
    """The tier a study name was made for (`study_name`'s inverse on that one word)."""
    words = name.split("-")
    return "full" if "full" in words[1:3] else "default"
