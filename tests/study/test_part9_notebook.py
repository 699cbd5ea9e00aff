"""Part 9, the notebook replayed: its section on hand-made frames with known answers, the
library's own refusal of the notebook's foreign optimizer, the note when CIFAR-10 is absent,
its file on MNIST-1D and CIFAR-10, and the inputs normalized as the notebook did through the
real CIFAR-10 loader."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from normlab.analysis.stats import NOT_SUPPORTED, SUPPORTED
from normlab.data import cifar, load_dataset
from normlab.models import build_model
from normlab.study import part9_notebook as nb
from normlab.study.common import PartData, attach_literature
from normlab.study.protocol import Protocol, _with, evaluation_runs
from normlab.study.registry import PARTS, QUICK_PROTOCOL, load_part
from normlab.train import metrics as M
from normlab.train import optim
from normlab.train.build import build
from normlab.train.config import RunConfig
from normlab.train.optim import ForeignOptimizerError, build_optimizer, check_optimizer_owns_model
from normlab.train.parallel import ProcessContext

COLUMNS = ["run_id", "step", "epoch", "name", "value"]
LABELS = [
    "none",
    "batch",
    "none, train-split stats",
    "batch, train-split stats",
    "none bs 32",
    "batch bs 32",
    "none bs 64",
    "batch bs 64",
    "none bs 128",
    "batch bs 128",
]


def _frames(acc, eval_gain=0.03, dataset="mnist1d", seeds=range(10)):
    """Runs of every label with test accuracy `acc[label] + noise(seed)` after the last of two
    evaluations (the section must read the last, as the notebook printed it), and held-out accuracy
    in eval mode higher than in train mode by `eval_gain` for BN runs, by exactly 0 without BN."""
    runs, rows = [], []
    for label, base in acc.items():
        size = int(label.split("bs ")[1]) if "bs " in label else 64
        for seed in seeds:
            rid = f"{label}-{seed}"
            runs.append(
                {
                    "run_id": rid,
                    "variant": label,
                    "seed": seed,
                    "status": "finished",
                    "lr": 1e-3,
                    "steps": 20,
                    "epochs": 2,
                    "batch_size": size,
                    "hidden": "[512, 256]",
                    "norm": label.split(",")[0].split(" ")[0],
                    "dataset": dataset,
                    "group": f"notebook/{label}",
                }
            )
            # per-seed noise of mean 0.004 in every variant, different across variants (so that
            # per-seed differences have a spread)
            value = base + 0.002 * ((seed * 7 + len(label)) % 5)
            hold = 0.6 + 0.001 * seed
            gain = eval_gain + 0.002 * ((seed * 3) % 5) - 0.004 if label.startswith("batch") else 0.0
            # epoch 1: every variant's test accuracy 0.3 (no effect) while the held-out accuracy
            # peaks there, so reading the best held-out epoch instead of the last would find nothing
            for step, epoch, test, shift in ((10, 1, 0.3 + value - base, 0.05), (20, 2, value, 0.0)):
                rows += [
                    (rid, step, epoch, M.TEST_ACC, test),
                    (rid, step, epoch, M.STEPS_PER_EPOCH, 10),
                    (rid, step, epoch, M.HOLDOUT_ACC_EVAL_MODE, hold + gain + shift),
                    (rid, step, epoch, M.HOLDOUT_ACC_TRAIN_MODE, hold + shift),
                ]
    return PartData(pd.DataFrame(runs), pd.DataFrame(rows, columns=COLUMNS))


BASE = {
    "none": 0.50,
    "batch": 0.55,
    "none, train-split stats": 0.56,
    "batch, train-split stats": 0.55,
    "none bs 32": 0.60,
    "batch bs 32": 0.62,
    "none bs 64": 0.60,
    "batch bs 64": 0.65,
    "none bs 128": 0.60,
    "batch bs 128": 0.68,
}


def _labels(section):
    return {f.claim: f.verdict.label for f in section.findings}


def _find(section, start):
    found = [f for f in section.findings if f.claim.startswith(start)]
    assert len(found) == 1, (start, [f.claim for f in section.findings])
    return found[0]


@pytest.fixture
def no_cifar(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_DATA", str(tmp_path))
    return tmp_path


def test_section_verdicts_follow_the_numbers(no_cifar):
    section = nb.section(_frames(BASE))
    assert _find(section, "In the notebook's setting").verdict.label == SUPPORTED  # +5 points
    assert _find(section, "In the notebook's setting").verdict.effect == pytest.approx(0.05, abs=1e-9)
    assert _find(section, "With inputs normalized by the training split").verdict.label == NOT_SUPPORTED  # -1
    assert _find(section, "Normalizing the inputs").verdict.label == SUPPORTED  # +6 for none
    harmless = _find(section, "BN makes the notebook's 0.5/0.5").verdict  # none +6, BN +0: 6 points
    assert harmless.label == SUPPORTED and harmless.effect == pytest.approx(0.06, abs=1e-9)
    for size, gain in ((32, 0.02), (64, 0.05), (128, 0.08)):
        v = _find(section, f"At batch size {size} ").verdict
        assert v.label == SUPPORTED and v.effect == pytest.approx(gain, abs=1e-9)
    small = _find(section, "BN depends on the batch size").verdict  # gain 8 at 128 vs 2 at 32
    assert small.label == SUPPORTED and small.effect == pytest.approx(0.06, abs=1e-9)
    evaluated = _find(section, "Mistake (b)").verdict  # eval mode 3 points above train mode, paired
    assert evaluated.paired and evaluated.label == SUPPORTED and evaluated.effect == pytest.approx(0.03, abs=1e-9)
    assert any("largest difference over 40 runs without BN is 0.00 points" in m for m in section.measured)
    assert {f.name for f in section.figures} == {
        "notebook_final_acc",
        "notebook_batch_size",
        "notebook_eval_minus_train",
    }
    attach_literature(section, nb.LITERATURE)  # every claim says what the literature found
    assert all(f.literature for f in section.findings), [f.claim for f in section.findings if not f.literature]


def test_verdicts_turn_when_the_numbers_do(no_cifar):
    """Same advantage at every batch size, BN behind at 2 epochs, train mode better than eval."""
    flat = {**BASE, "batch": 0.45, "batch bs 32": 0.65, "batch bs 128": 0.65}
    section = nb.section(_frames(flat, eval_gain=-0.03))
    assert _find(section, "In the notebook's setting").verdict.label == NOT_SUPPORTED
    assert _find(section, "BN depends on the batch size").verdict.label == NOT_SUPPORTED  # 5 vs 5 points
    assert _find(section, "Mistake (b)").verdict.label == NOT_SUPPORTED


def test_the_foreign_optimizer_message_is_the_librarys_own(no_cifar):
    with_bn = build_model("mlp", (3, 32, 32), 10, norm="batch", hidden=[512, 256])
    without = build_model("mlp", (3, 32, 32), 10, norm="none", hidden=[512, 256])
    with pytest.raises(ForeignOptimizerError) as raised:
        check_optimizer_owns_model(with_bn, build_optimizer(without, RunConfig(norm="none")))
    message = nb.foreign_optimizer_message()
    assert message == str(raised.value)
    trainable = sum(1 for p in with_bn.parameters() if p.requires_grad)
    assert f"exactly the model's {trainable} trainable parameters" in message
    section = nb.section(_frames(BASE))
    line = next(m for m in section.measured if m.startswith("Mistake (a)"))
    assert message in line and "8.81%" in line and "3072-512-256-10" in line


def test_the_message_is_produced_when_the_report_is_written(no_cifar, monkeypatch):
    def refuses(model, optimizer):
        raise ForeignOptimizerError("refused, as this stand-in says")

    monkeypatch.setattr(optim, "check_optimizer_owns_model", refuses)  # looked up when called
    section = nb.section(_frames(BASE))
    assert any("refused, as this stand-in says" in m for m in section.measured)
    monkeypatch.setattr(optim, "check_optimizer_owns_model", lambda model, optimizer: None)
    with pytest.raises(RuntimeError, match="accepted another model's optimizer"):
        nb.foreign_optimizer_message()


def test_without_cifar10_the_section_says_how_to_get_it(no_cifar):
    note = nb.cifar10_note("mnist1d")
    assert "not on disk" in note and str(no_cifar / "cifar10") in note
    assert "`normlab data info cifar10`" in note and f"`{nb.STUDY_COMMAND}`" in note
    assert nb.STUDY_COMMAND.startswith("normlab study --dataset cifar10")
    (no_cifar / "cifar10").mkdir()
    (no_cifar / "cifar10" / cifar.CIFAR10.archive.name).write_bytes(b"")  # the archive is there
    note = nb.cifar10_note("mnist1d")
    assert "CIFAR-10 is on disk" in note and "not on disk" not in note
    assert nb.cifar10_note("cifar10") is None


def test_the_section_carries_the_note_and_on_cifar10_the_notebooks_number(no_cifar):
    assert any("`normlab data info cifar10`" in n for n in nb.section(_frames(BASE, seeds=range(3))).notes)
    on_cifar = nb.section(_frames(BASE, dataset="cifar10"))
    assert not any("CIFAR-10" in n for n in on_cifar.notes)
    # on CIFAR-10 the replay is compared with what the notebook printed for its network without BN
    assert any(m.startswith("The notebook printed 51.2%") and "50.4%" in m for m in on_cifar.measured)


def test_part_is_registered_and_its_file_is_valid_on_both_datasets():
    assert nb in PARTS and nb.TIER in ("default", "full")
    spec = load_part(nb, "mnist1d")
    assert [v.label for v in spec.variants] == LABELS and all(v.kind == "fixed" for v in spec.variants)
    for v in spec.variants:
        c = v.config
        assert (c.lr, c.optimizer, c.hidden, c.model) == (1e-3, "adam", [512, 256], "mlp")
        assert c.input_norm == ("train_split" if "train-split" in v.label else "half")
        assert (c.batch_size, c.epochs) == ((int(v.label.split("bs ")[1]), 10) if "bs " in v.label else (64, 2))
    runs = evaluation_runs(spec, Protocol(), {})
    assert len(runs) == 100 and {r.config.seed for r in runs} == set(range(10))
    on_cifar = load_part(nb, "cifar10")
    assert {v.config.dataset for v in on_cifar.variants} == {"cifar10"}


def test_quick_is_cheap():
    spec = load_part(nb, "mnist1d", quick=True)
    runs = evaluation_runs(spec, QUICK_PROTOCOL, {})
    assert len(runs) == 12 and all(r.config.max_steps == 5 for r in runs)
    assert {"none", "batch", "none bs 32", "batch bs 128"} <= {v.label for v in spec.variants}


def _tiny_cifar10(root, monkeypatch, per_file=20):
    """Extracted CIFAR-10 binary batches of `per_file` random records each, in the real format."""
    spec = dataclasses.replace(
        cifar.CIFAR10,
        train_files=tuple((f"data_batch_{i}.bin", per_file) for i in range(1, 6)),
        test_files=(("test_batch.bin", per_file),),
    )
    rng = np.random.default_rng(0)
    for path in spec.paths(root / "cifar10"):
        path.parent.mkdir(parents=True, exist_ok=True)
        records = np.concatenate([rng.integers(0, 10, (per_file, 1)), rng.integers(0, 256, (per_file, 3072))], axis=1)
        path.write_bytes(records.astype(np.uint8).tobytes())
    monkeypatch.setattr(cifar, "CIFAR10", spec)


def test_the_notebooks_normalization_through_the_real_cifar10_loader(tmp_path, monkeypatch):
    _tiny_cifar10(tmp_path, monkeypatch)
    spec = load_part(nb, "cifar10")
    configs = {v.label: _with(v.config, data_root=str(tmp_path)) for v in spec.variants}
    ds = load_dataset("cifar10", tmp_path, download=False)
    pixels = ds.test_x.double() / 255  # (20, 3, 32, 32)
    train = ds.train_x.double() / 255
    mean = train.mean(dim=(0, 2, 3)).view(1, 3, 1, 1)  # the training split's, per channel
    std = train.std(dim=(0, 2, 3), unbiased=False).view(1, 3, 1, 1)
    for label, expected in (("batch", (pixels - 0.5) / 0.5), ("batch, train-split stats", (pixels - mean) / std)):
        built = build(configs[label], None, ProcessContext())
        x, _ = built.test_loader.make_batch(torch.arange(len(ds.test_y)))
        torch.testing.assert_close(x.double(), expected, atol=1e-5, rtol=1e-5)
        first = next(m for m in built.model.modules() if isinstance(m, torch.nn.Linear))
        assert first.in_features == 3072  # the input size follows the dataset


def test_runs_without_a_held_out_slice_make_no_eval_mode_claim(no_cifar):
    data = _frames({"none": 0.5, "batch": 0.55}, seeds=range(3))
    data.metrics = data.metrics[~data.metrics["name"].isin([M.HOLDOUT_ACC_EVAL_MODE, M.HOLDOUT_ACC_TRAIN_MODE])]
    section = nb.section(data)
    assert [f.claim.split(" (")[0] for f in section.findings] == ["In the notebook's setting"]


def test_the_batch_size_figure_states_the_epochs_the_runs_trained():
    runs = pd.DataFrame({"run_id": ["a", "b"], "variant": ["none bs 32", "batch bs 128"], "steps": [1120, 280]})
    metrics = pd.DataFrame(
        {"run_id": ["a", "b"], "step": [0, 0], "epoch": [0, 0], "name": [M.STEPS_PER_EPOCH] * 2, "value": [112, 28]}
    )
    data = PartData(runs, metrics)
    assert nb._epochs(runs, data) == "10 epochs"
    assert nb._epochs(runs, PartData(runs, metrics.iloc[:0])) == "equal epochs"
    metrics.loc[1, "value"] = 14.0  # a run that trained 20 epochs: both budgets are named
    assert nb._epochs(runs, PartData(runs, metrics)) == "10 / 20 epochs"
