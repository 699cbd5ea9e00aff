"""`measure_mechanisms`: the measurements of the "what BN does" and "internal covariate shift"
parts, taken on finished runs (like `recalibrate`) and stored as ordinary metrics.

For each finished run, on a fixed set of its training batches (`normlab.train.ics_probe`), at
its initialization (step 0: the model rebuilt exactly as the engine builds it, from the run's
seed) and its end (its checkpoint, with the optimizer's state), and for the runs asked for at
about TRACE_POINTS - 2 points between (`trace`: the run trained again with the engine's
probe on, kept only if it reproduces the checkpoint's measurement bit for bit):

- ICS per layer k (Santurkar et al. 2018, Def. 2.1), with the step the run's own optimizer
  takes (`optimizer_deltas`): `ics/<k>/l2` and `ics/<k>/cos`, means over the batches;
- the landscape along the gradient (Santurkar et al. Sec. 3.1) at step sizes
  `metrics.LANDSCAPE_STEP_SIZES`: `landscape/loss_range`, `landscape/grad_change`,
  `landscape/beta`, means over the batches;
- on BN runs, the anatomy of the first BN layer at the end (`anatomy/...`): histograms of its
  pre- and post-BN activations, gamma and beta per channel, and the error of the identity
  "gamma = sqrt(var + eps), beta = mean recovers the input".

Noisy BN layers hold their noise during a measurement (`held_noise`), so the probes see the
weights change, not fresh noise. Everything is measured once per run (a stored metric is not
measured again).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

from normlab.experiments.store import Store
from normlab.study.finished import build_on_cpu, checkpoint, pending, train_batches, with_data
from normlab.train import metrics as M
from normlab.train.config import RunConfig

PROBE_BATCHES = M.ICS_PROBE_BATCHES  # training batches each measurement averages over
HIST_BINS = 40
ICS_DONE = "ics/2/cos"  # present once a run has been measured (layer 1 has no ICS)
TRACE_DONE = "ics_trace/reproduced"  # 1.0: the replay reproduced the run; 0.0: it did not
TRACE_POINTS = 6  # measuring points over training: init, the end and evenly between
ANATOMY_LAYER = "blocks.0.norm"  # the first hidden layer's norm in normlab's MLP

BN_NORMS = ("batch", "noisy_batch", "ghost_batch", "batch_renorm")
ics_key, LANDSCAPE_KEYS = M.ics_key, M.LANDSCAPE_KEYS


def _batches(config: RunConfig, dataset) -> list[tuple[Any, Any]]:
    """PROBE_BATCHES training batches of the run's batch size, the same for init and end."""
    return list(itertools.islice(train_batches(config, dataset, config.batch_size), PROBE_BATCHES))


def trace_every(epochs: int) -> int:
    """Epochs between measuring points so that a run of `epochs` has about TRACE_POINTS of them
    (step 0, every so many epochs, the last epoch): 25 epochs -> every 5."""
    return max(1, round(epochs / (TRACE_POINTS - 1)))


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal keys and bit-equal values (NaN equal to NaN: a cosine of a zero gradient)."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def trace(config: RunConfig, dataset, state: dict[str, Any]) -> list[tuple[int, int, str, float]]:
    """The run trained again from its seed with the mechanism probe on (`probes.ics_every_epochs`
    = `trace_every(config.epochs)`, on copies, so the training is the run's own), one torch
    thread as the study's workers train: its (step, epoch, name, value) rows of the points
    strictly between init and the end, and TRACE_DONE. The replay counts as the run only if
    its end-of-training probe equals the probe of the run's checkpoint `state` bit for bit
    (same weights, same optimizer state); otherwise only TRACE_DONE = 0 is returned."""
    import torch

    from normlab.train.engine import fit
    from normlab.train.ics_probe import measure_shift

    resolved = config.resolved()
    replay = RunConfig.model_validate(
        {**resolved, "probes": {**resolved["probes"], "ics_every_epochs": trace_every(config.epochs)}}
    )
    rows: list[tuple[int, int, str, float]] = []

    def keep(step: int, epoch: int, values: dict[str, float]) -> None:
        rows.extend((step, epoch, k, v) for k, v in values.items() if k.startswith(("ics/", "landscape/")))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # both sides of the comparison: a BN reduction's sum order depends on it
    try:
        result = fit(replay, dataset=dataset, on_metrics=keep)
        model, optimizer = build_on_cpu(config, dataset)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        expected = measure_shift(model, optimizer, _batches(config, dataset))
    finally:
        torch.set_num_threads(threads)
    step = int(state["step"])
    at_end = {name: value for s, _, name, value in rows if s == step}
    if result.steps != step or not _same(at_end, expected):
        return [(step, int(state["epoch"]), TRACE_DONE, 0.0)]
    return [r for r in rows if 0 < r[0] < step] + [(step, int(state["epoch"]), TRACE_DONE, 1.0)]


def anatomy(model, x) -> dict[str, float]:
    """The first BN layer on batch x: histograms, gamma/beta per channel, the identity's error."""
    from normlab.train.bn_anatomy import capture_bn, histogram, recovers_input

    model.train()
    snap = capture_bn(model, x, ANATOMY_LAYER)
    lo = float(min(snap.input.min(), snap.output.min()))
    hi = float(max(snap.input.max(), snap.output.max()))
    values = {
        "anatomy/hist_lo": lo,
        "anatomy/hist_hi": hi,
        "anatomy/identity_error": recovers_input(dict(model.named_modules())[ANATOMY_LAYER], snap.input),
        "anatomy/input_scale": float(snap.input.abs().max()),
    }
    for which, t in (("pre", snap.input), ("post", snap.output)):
        counts, _ = histogram(t, HIST_BINS, lo, hi)
        values.update({f"anatomy/{which}_hist/{i}": float(c) for i, c in enumerate(counts)})
    for which, t in (("gamma", snap.gamma), ("beta", snap.beta)):
        if t is not None:
            values.update({f"anatomy/{which}/{c}": float(v) for c, v in enumerate(t.tolist())})
    return values


def measure_mechanisms(
    experiment: str, runs: dict[str, RunConfig], out_dir: str | Path, traced: Collection[str] | None = None
) -> int:
    """For each finished run in `runs` (run_id -> config of the stored `experiment`) not yet
    measured: probe it at init (step 0) and at its checkpoint (its last step), and for those of
    `traced` (run ids; None: every run) between them too (`trace`); store. Returns how many
    runs were measured at init and end."""
    from normlab.train.ics_probe import measure_shift

    measured = 0
    with Store.open(out_dir) as store:
        for run_id, config, data in with_data(runs, pending(store, experiment, runs, ICS_DONE)):
            state = checkpoint(Path(out_dir), run_id)
            if state is None:
                continue
            batches = _batches(config, data)
            model, optimizer = build_on_cpu(config, data)
            rows = [(0, 0, k, v) for k, v in measure_shift(model, optimizer, batches).items()]
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            step, epoch = int(state["step"]), int(state["epoch"])
            rows += [(step, epoch, k, v) for k, v in measure_shift(model, optimizer, batches).items()]
            if config.norm in BN_NORMS:
                rows += [(step, epoch, k, v) for k, v in anatomy(model, batches[0][0]).items()]
            store.add_metrics(run_id, rows)
            measured += 1
        over_training = {rid: c for rid, c in runs.items() if traced is None or rid in traced}
        for run_id, config, data in with_data(over_training, pending(store, experiment, over_training, TRACE_DONE)):
            state = checkpoint(Path(out_dir), run_id)
            if state is not None:
                store.add_metrics(run_id, trace(config, data, state))
    return measured
