"""Part 9: the seed notebook's own protocol, replayed as it ran, and its two mistakes named.

The notebook trained its MLP (3072-512-256-10 on CIFAR-10) with and without BN at Adam lr 1e-3,
batch size 64, for 2 epochs, then at batch sizes 32, 64 and 128 for 10 epochs, its inputs
normalized with mean 0.5 and std 0.5 per channel. Its BN model scored 8.81% (chance) because of
two mistakes, each shown here as what it is:

  (a) the BN model was stepped by the *other* model's optimizer, so its weights never moved:
      normlab refuses that (`check_optimizer_owns_model`), and the section quotes the library's
      own message, produced when the report is written, on the notebook's two networks;
  (b) it evaluated BN in training mode (no `model.eval()`): measured as the eval-mode minus
      train-mode held-out accuracy of the BN runs, paired per run.

Claims: BN beats no BN in the notebook's setting (2 epochs; 10 epochs at each batch size); BN's
advantage is smaller at batch size 32 than at 128 (the notebook's small-batch limitation); the
training split's input statistics help the network without BN more than BN. Each run's number
is its test accuracy after the last epoch, as the notebook printed it. These rows share the
notebook's lr: the fair comparison, each network at its own lr, is part 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from normlab.analysis import plots
from normlab.analysis.frames import final_frame
from normlab.analysis.render import FigureSpec, Section
from normlab.analysis.stats import NOT_SUPPORTED, SUPPORTED, aggregate, summarize
from normlab.study.common import (
    Literature,
    PartData,
    acc_claim,
    empty,
    hidden_text,
    interaction_claim,
    paired_claim,
    setup_text,
)
from normlab.train import metrics as M
from normlab.train.config import RunConfig

KEY = "notebook"
FILE = "notebook.yaml"
TIER = "default"
"""All 100 runs cost 94.6 single-thread CPU s on MNIST-1D (measured; configs/notebook.yaml):
within the 120 s a new part may add to the default tier."""
QUICK = {
    "keep": ["none", "batch", "none bs 32", "batch bs 32", "none bs 128", "batch bs 128"],
    "set": {"epochs": 1, "max_steps": 5},
}
"""`--quick`: 5 steps per run, the 2-epoch rows and the batch sizes 32 and 128 (12 runs)."""

BATCH_SIZES = (32, 64, 128)
NOTEBOOK_ACC = {"none": 0.512, "batch": 0.0881}
"""Test accuracy the notebook printed on CIFAR-10 (its own run, quoted): 51.2% without BN, 8.81%
with BN, the BN model being untrained (mistake (a))."""
NOTEBOOK_HIDDEN = (512, 256)
CIFAR_SHAPE = (3, 32, 32)
INPUT_SIZE = {"cifar10": "3072 values", "mnist1d": "40 values"}
DATASET_NAME = {"cifar10": "CIFAR-10", "mnist1d": "MNIST-1D"}
STUDY_COMMAND = "normlab study --dataset cifar10" + (" --tier full" if TIER == "full" else "")

LITERATURE = [
    Literature(
        "In the notebook's setting",
        "Ioffe & Szegedy (2015, Fig. 2 and Sec. 4.2): at the same learning rate BN trained faster, so "
        "after a short budget BN is ahead; Bjorck et al. (2018) find most of BN's gain comes from the "
        "larger lr it allows, which a shared lr does not use.",
        SUPPORTED,
    ),
    Literature(
        "With inputs normalized by the training split's statistics, BN",
        "Ioffe & Szegedy (2015): BN ahead at a shared lr, whatever the input normalization.",
        SUPPORTED,
    ),
    Literature(
        "At batch size",
        "Ioffe & Szegedy (2015): BN ahead at a shared lr; Bjorck et al. (2018) found networks with and "
        "without BN reaching similar accuracy at a small shared lr, BN's benefit coming mainly from the "
        "larger lr it allows, so at 10 epochs the gap may close.",
        SUPPORTED,
    ),
    Literature(
        "BN depends on the batch size",
        "Wu & He (2018, Fig. 1): BN's error is nearly flat from 32 images per batch down to 16 and rises "
        "below, so little difference is expected between 32 and 128; here equal epochs also give "
        "batch 32 4x the steps of batch 128, for both networks.",
        NOT_SUPPORTED,
    ),
    Literature(
        "raises the test accuracy of the network without BN",
        "LeCun et al. (1998, Efficient BackProp, Sec. 4.3): inputs centred on zero with unit variance "
        "train faster; 0.5/0.5 leaves data whose mean is not 0.5 off-centre.",
        SUPPORTED,
    ),
    Literature(
        "BN makes the notebook's 0.5/0.5 input normalization harmless",
        "Ioffe & Szegedy (2015) present BN as input whitening (LeCun et al. 1998) extended to every "
        "layer: BN after the first linear layer removes a constant input shift exactly, so the "
        "input normalization should matter less with BN.",
        SUPPORTED,
    ),
    Literature(
        "model.eval()",
        "Ioffe & Szegedy (2015, Sec. 3.1) normalize with population statistics at inference so that "
        "the output depends on the input alone; the sign of the difference at batch 64 is not "
        "predicted.",
        None,
    ),
]


def foreign_optimizer_message(
    hidden: tuple[int, ...] = NOTEBOOK_HIDDEN, input_shape: tuple[int, ...] = CIFAR_SHAPE, num_classes: int = 10
) -> str:
    """The library's own refusal of the notebook's mistake (a): the optimizer built for the MLP
    without BN, handed to the MLP with BN (both `input_shape` -> hidden -> `num_classes`)."""
    from normlab.models import build_model  # torch: only this demonstration needs it (see _STUDY)
    from normlab.train.optim import ForeignOptimizerError, build_optimizer, check_optimizer_owns_model

    with_bn = build_model("mlp", input_shape, num_classes, norm="batch", hidden=list(hidden))
    without = build_model("mlp", input_shape, num_classes, norm="none", hidden=list(hidden))
    optimizer = build_optimizer(without, RunConfig(norm="none", hidden=list(hidden), lr=1e-3))
    try:
        check_optimizer_owns_model(with_bn, optimizer)
    except ForeignOptimizerError as exc:
        return str(exc)
    raise RuntimeError("check_optimizer_owns_model accepted another model's optimizer")  # a bug


CIFAR10_NAME = "cifar10"  # the registered name of the notebook's dataset


def cifar10_missing(root: str | Path | None = None) -> Path | None:
    """The CIFAR-10 data directory when neither its extracted files nor its archive are there
    (nothing to replay the notebook's data on), else None. Reads nothing but file names."""
    from normlab.data.cifar import CIFAR10  # torch (the data package): see _STUDY
    from normlab.data.storage import data_root

    directory = data_root(root) / CIFAR10.name
    files = CIFAR10.paths(directory)
    if all(p.exists() for p in files) or (directory / CIFAR10.archive.name).exists():
        return None
    return directory


def cifar10_note(dataset: str, root: str | Path | None = None) -> str | None:
    """What to do to replay this part on the notebook's own data, off CIFAR-10."""
    if dataset == CIFAR10_NAME:
        return None
    missing = cifar10_missing(root)
    where = (
        (
            f"CIFAR-10, the notebook's data, is not on disk here ({missing}), so this part ran on "
            f"{dataset}. To replay it on CIFAR-10: `normlab data info cifar10` (where to put the "
            f"archive and its SHA-256), then `{STUDY_COMMAND}`."
        )
        if missing
        else (
            f"CIFAR-10 is on disk: `{STUDY_COMMAND}` replays this part on the notebook's own data "
            f"(this run used {DATASET_NAME.get(dataset, dataset)})."
        )
    )
    return where


def eval_minus_train(data: PartData, labels: list[str]) -> pd.DataFrame:
    """Per run of `labels`: held-out accuracy in eval mode (running statistics) minus train mode
    (the statistics of each held-out batch, of the training batch size) after the last epoch."""
    runs = data.of(*labels)
    ev = final_frame(runs, data.metrics, M.HOLDOUT_ACC_EVAL_MODE)
    tr = final_frame(runs, data.metrics, M.HOLDOUT_ACC_TRAIN_MODE).set_index("run_id")["value"]
    return ev.assign(value=ev["value"] - ev["run_id"].map(tr))


def _epochs(rows: pd.DataFrame, data: PartData) -> str:
    """ "10 epochs": the epochs the runs of `rows` trained, from their stored steps per epoch."""
    per_epoch = data.metrics[data.metrics["name"] == M.STEPS_PER_EPOCH].groupby("run_id")["value"].first()
    runs = data.runs[data.runs["run_id"].isin(rows["run_id"])].drop_duplicates("run_id").set_index("run_id")
    epochs = sorted({round(float(runs.at[r, "steps"]) / per_epoch[r], 1) for r in runs.index if r in per_epoch})
    return " / ".join(f"{e:g}" for e in epochs) + " epochs" if epochs else "equal epochs"


def section(data: PartData) -> Section:
    title = "9. The notebook, replayed"
    if data.runs.empty or not data.has("none", "batch"):
        return empty(title, "Not run: this part needs the variants 'none' and 'batch'.")
    labels = list(data.runs["variant"].unique())
    runs = data.of(*labels)
    dataset = str(runs["dataset"].iloc[0]) if "dataset" in runs else "mnist1d"
    shown = DATASET_NAME.get(dataset, dataset)
    sec = Section(
        title,
        setup_text(
            data,
            (
                f"The seed notebook's protocol as it ran, on {shown}: its MLP (hidden {hidden_text(runs)}; input: "
                f"the flattened sample, {INPUT_SIZE.get(dataset, 'its size')}), Adam at {data.lr_of('none')} for both "
                f"networks, {data.budget('none', 'batch')}; inputs normalized as the notebook did (mean 0.5, std 0.5 "
                "per channel) unless a label says 'train-split stats' (the training split's own per-channel mean and "
                "std). These rows use the notebook's shared lr: the fair comparison, each network at its own lr "
                "selected on held-out data, is part 1; the point here is to replay the notebook honestly. Each "
                "run's number is its test accuracy after the last epoch, as the notebook printed it."
            ),
        ),
    )
    note = cifar10_note(dataset)
    if note:
        sec.notes.append(note)

    acc = data.final(*labels, name=M.TEST_ACC)
    what = "test accuracy after the last epoch, both at the notebook's lr"
    sec.findings.append(
        acc_claim(
            f"In the notebook's setting ({data.budget('batch')}, Adam {data.lr_of('batch')} for both, inputs "
            "normalized with 0.5 and 0.5) BN reaches a higher test accuracy than no BN.",
            acc,
            "batch",
            "none",
            what,
        )
    )
    if data.has("none, train-split stats", "batch, train-split stats"):
        sec.findings.append(
            acc_claim(
                "With inputs normalized by the training split's statistics, BN reaches a higher test accuracy "
                f"than no BN ({data.budget('batch, train-split stats')}).",
                acc,
                "batch, train-split stats",
                "none, train-split stats",
                what,
            )
        )
        sec.findings.append(
            acc_claim(
                "Normalizing the inputs by the training split's per-channel mean and std instead of the "
                "notebook's 0.5 and 0.5 raises the test accuracy of the network without BN.",
                acc,
                "none, train-split stats",
                "none",
                "test accuracy, train-split statistics vs 0.5/0.5 (no BN)",
            )
        )
        sec.findings.append(
            interaction_claim(
                "BN makes the notebook's 0.5/0.5 input normalization harmless: the training split's statistics "
                "improve the network without BN more than they improve BN.",
                acc,
                ("none", "none, train-split stats"),
                ("batch", "batch, train-split stats"),
                "accuracy gained from the training split's statistics, no BN vs BN",
                hurts=False,
            )
        )
    sizes = [b for b in BATCH_SIZES if data.has(f"none bs {b}", f"batch bs {b}")]
    for b in sizes:
        sec.findings.append(
            acc_claim(
                f"At batch size {b} ({data.budget(f'batch bs {b}')}, Adam {data.lr_of(f'batch bs {b}')} for both) "
                "BN reaches a higher test accuracy than no BN.",
                acc,
                f"batch bs {b}",
                f"none bs {b}",
                what,
            )
        )
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        sec.findings.append(
            interaction_claim(
                f"BN depends on the batch size (the notebook's small-batch limitation): its advantage over no BN "
                f"is smaller at batch size {small} than at {large} (equal epochs: {data.steps(f'batch bs {small}')} "
                f"vs {data.steps(f'batch bs {large}')}).",
                acc,
                (f"none bs {large}", f"batch bs {large}"),
                (f"none bs {small}", f"batch bs {small}"),
                f"BN's accuracy gain over no BN, batch size {large} vs {small}",
                hurts=False,
            )
        )

    _mistakes(data, sec, dataset, acc)
    _figures(data, sec, acc, sizes)
    table = aggregate(acc.assign(pct=100 * acc["value"]), "variant", "pct")
    sec.table = (
        table[["variant", "n", "mean", "ci_low", "ci_high"]]
        .round(2)
        .rename(columns={"mean": "test acc %", "ci_low": "95% CI low", "ci_high": "95% CI high"})
    )
    sec.measured.append("Table: test accuracy (%) after the last epoch per variant, all at the notebook's lr.")
    return sec


def _mistakes(data: PartData, sec: Section, dataset: str, acc: pd.DataFrame) -> None:
    """The notebook's two mistakes: the library's refusal of (a), the measured effect of (b)."""
    hidden = tuple(int(h) for h in str(hidden_text(data.of("batch"))).strip("[]").split(","))
    message = foreign_optimizer_message(hidden)
    sec.measured.append(
        f"Mistake (a), the foreign optimizer: the notebook stepped its BN model with the optimizer built for "
        f"the model without BN, so the BN model's weights stayed at their initialization; its "
        f"{NOTEBOOK_ACC['batch']:.2%} on CIFAR-10 is chance for 10 classes and came from that mistake, not "
        f"from BN. normlab refuses such an optimizer: check_optimizer_owns_model on the notebook's two MLPs "
        f"(3072-{'-'.join(str(h) for h in hidden)}-10, the BN one given the other's optimizer) raises "
        f'ForeignOptimizerError: "{message}"'
    )
    if dataset == CIFAR10_NAME:
        mine = summarize(acc.loc[acc["variant"] == "none", "value"].to_numpy(dtype=float))
        sec.measured.append(
            f"The notebook printed {NOTEBOOK_ACC['none']:.1%} for its network without BN; this replay's runs "
            f"without BN: {mine.mean:.1%} (95% CI {mine.ci_low:.1%} to {mine.ci_high:.1%}, n = {mine.n})."
        )

    bn = [v for v in ("batch", "batch, train-split stats") + tuple(f"batch bs {b}" for b in BATCH_SIZES) if data.has(v)]
    diff = eval_minus_train(data, bn)
    notebook_bn = diff.loc[diff["variant"] == "batch", "value"].dropna().to_numpy(dtype=float)
    if notebook_bn.size:  # a run without a held-out slice has no train-mode accuracy
        sec.findings.append(
            paired_claim(
                "Mistake (b), evaluating in training mode: model.eval() raises BN's accuracy: in eval mode (running "
                "statistics) the held-out accuracy is higher than in train mode (each held-out batch's own "
                f"statistics, as the notebook evaluated), {data.budget('batch')}.",
                notebook_bn,
                "held-out accuracy, eval mode minus train mode (BN, the notebook's setting)",
            )
        )
    plain = eval_minus_train(data, [v for v in ("none",) + tuple(f"none bs {b}" for b in BATCH_SIZES) if data.has(v)])
    if plain["value"].notna().any():
        largest = float(np.nanmax(np.abs(plain["value"].to_numpy(dtype=float))))
        sec.measured.append(
            f"Without BN, eval mode and train mode compute the same function: the largest difference over "
            f"{int(plain['value'].notna().sum())} runs without BN is {100 * largest:.2f} points."
        )
    if diff["value"].notna().any():
        sec.figures.append(
            FigureSpec(
                "notebook_eval_minus_train",
                plots.plot_final_accuracy(
                    diff,
                    order=bn,
                    title="Eval-mode minus train-mode accuracy (BN)",
                    ylabel="accuracy difference",
                    budget="after the last epoch",
                ),
                "Held-out accuracy in eval mode minus train mode after the last epoch, per BN run (the notebook "
                "evaluated in train mode): mean, 95% CI, one dot per seed; all at the notebook's lr.",
            )
        )


def _figures(data: PartData, sec: Section, acc: pd.DataFrame, sizes: list[int]) -> None:
    order = [v for v in ("none", "batch", "none, train-split stats", "batch, train-split stats") if data.has(v)]
    sec.figures.append(
        FigureSpec(
            "notebook_final_acc",
            plots.plot_final_accuracy(
                acc[acc["variant"].isin(order)],
                order=order,
                title="The notebook's setting",
                ylabel="test accuracy (last epoch)",
                budget=f"at {data.steps('none', 'batch')}",
            ),
            f"Test accuracy after the last epoch ({data.budget('none', 'batch')}, Adam {data.lr_of('none')} for "
            "both): mean, 95% CI and one dot per seed; inputs normalized with 0.5/0.5 unless the label says "
            "train-split stats.",
        )
    )
    if sizes:
        labels = [f"{n} bs {b}" for b in sizes for n in ("none", "batch")]
        rows = acc[acc["variant"].isin(labels)]
        sec.figures.append(
            FigureSpec(
                "notebook_batch_size",
                plots.plot_batch_size(
                    rows,
                    title="The notebook's batch sizes",
                    ylabel="test accuracy (last epoch)",
                    budget=f"at {_epochs(rows, data)} each",
                ),
                "Test accuracy after the last epoch vs batch size, the notebook's lr for both: "
                + "; ".join(data.budget(f"batch bs {b}") for b in sizes)
                + ". Mean and 95% CI band over seeds.",
            )
        )
