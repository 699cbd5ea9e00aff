"""`measure_mechanisms`: the measurements of the "what BN does" and "internal covariate shift"
parts, taken on finished runs (like `recalibrate`) and stored as ordinary metrics.

For each finished run, on a fixed set of its training batches, at two points of its training:
its initialization (step 0: the model rebuilt exactly as the engine builds it, from the run's
seed) and its end (its checkpoint, with the optimizer's state):

- ICS per layer k (Santurkar et al. 2018, Def. 2.1), with the step the run's own optimizer
  takes (`optimizer_deltas`): `ics/<k>/l2` and `ics/<k>/cos`, means over the batches;
- the landscape along the gradient (Santurkar et al. Sec. 3.1) at step sizes `STEP_SIZES`:
  `landscape/loss_range`, `landscape/grad_change`, `landscape/beta`, means over the batches;
- on BN runs, the anatomy of the first BN layer at the end (`anatomy/...`): histograms of its
  pre- and post-BN activations, gamma and beta per channel, and the error of the identity
  "gamma = sqrt(var + eps), beta = mean recovers the input".

Noisy BN layers hold their noise during a measurement (`held_noise`), so the probes see the
weights change, not fresh noise. Everything is measured once per run (a stored metric is not
measured again).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from normlab.experiments.store import Store
from normlab.study.finished import build_on_cpu, checkpoint, pending, train_batches, with_data
from normlab.train.config import RunConfig

STEP_SIZES = (0.05, 0.1, 0.2, 0.4)
"""Santurkar et al.'s step sizes along the gradient (Fig. 4), the same for every network."""
PROBE_BATCHES = 4  # training batches each measurement averages over
HIST_BINS = 40
ICS_DONE = "ics/2/cos"  # present once a run has been measured (layer 1 has no ICS)
ANATOMY_LAYER = "blocks.0.norm"  # the first hidden layer's norm in normlab's MLP

BN_NORMS = ("batch", "noisy_batch", "ghost_batch", "batch_renorm")


def ics_key(layer: int, stat: str) -> str:
    """"ics/<k>/l2" or "ics/<k>/cos" for layer k (1 = the first Linear)."""
    return f"ics/{layer}/{stat}"


LANDSCAPE_KEYS = ("landscape/loss_range", "landscape/grad_change", "landscape/beta")


def _batches(config: RunConfig, dataset) -> list[tuple[Any, Any]]:
    """PROBE_BATCHES training batches of the run's batch size, the same for init and end."""
    return list(itertools.islice(train_batches(config, dataset, config.batch_size), PROBE_BATCHES))


def probe(model, optimizer, batches) -> dict[str, float]:
    """ICS per layer and the landscape numbers, means over `batches` (model in training mode)."""
    import torch

    from normlab.layers.noisy import held_noise
    from normlab.train.ics import internal_covariate_shift, optimizer_deltas
    from normlab.train.landscape import landscape_probe

    model.train()
    sums: dict[str, float] = {}
    for x, y in batches:
        def loss_fn(m, x=x, y=y):
            return torch.nn.functional.cross_entropy(m(x), y)

        with held_noise(model):
            deltas = optimizer_deltas(model, optimizer, loss_fn)
            layers = internal_covariate_shift(model, loss_fn, deltas=deltas)
            land = landscape_probe(model, loss_fn, STEP_SIZES)
        values = {LANDSCAPE_KEYS[0]: land.loss_range, LANDSCAPE_KEYS[1]: land.max_grad_change,
                  LANDSCAPE_KEYS[2]: land.beta_smoothness}
        for k, res in enumerate(layers[1:], start=2):  # layer 1 has no layer before it
            values[ics_key(k, "l2")] = res.l2
            values[ics_key(k, "cos")] = res.cosine
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value / len(batches)
    return sums


def anatomy(model, x) -> dict[str, float]:
    """The first BN layer on batch x: histograms, gamma/beta per channel, the identity's error."""
    from normlab.train.bn_anatomy import capture_bn, histogram, recovers_input

    model.train()
    snap = capture_bn(model, x, ANATOMY_LAYER)
    lo = float(min(snap.input.min(), snap.output.min()))
    hi = float(max(snap.input.max(), snap.output.max()))
    values = {"anatomy/hist_lo": lo, "anatomy/hist_hi": hi,
              "anatomy/identity_error": recovers_input(dict(model.named_modules())[ANATOMY_LAYER], snap.input),
              "anatomy/input_scale": float(snap.input.abs().max())}
    for which, t in (("pre", snap.input), ("post", snap.output)):
        counts, _ = histogram(t, HIST_BINS, lo, hi)
        values.update({f"anatomy/{which}_hist/{i}": float(c) for i, c in enumerate(counts)})
    for which, t in (("gamma", snap.gamma), ("beta", snap.beta)):
        if t is not None:
            values.update({f"anatomy/{which}/{c}": float(v) for c, v in enumerate(t.tolist())})
    return values


def measure_mechanisms(experiment: str, runs: dict[str, RunConfig], out_dir: str | Path) -> int:
    """For each finished run in `runs` (run_id -> config of the stored `experiment`) not yet
    measured: probe it at init (step 0) and at its checkpoint (its last step); store. Returns
    how many runs were measured."""
    measured = 0
    with Store.open(out_dir) as store:
        for run_id, config, data in with_data(runs, pending(store, experiment, runs, ICS_DONE)):
            state = checkpoint(Path(out_dir), run_id)
            if state is None:
                continue
            batches = _batches(config, data)
            model, optimizer = build_on_cpu(config, data)
            rows = [(0, 0, k, v) for k, v in probe(model, optimizer, batches).items()]
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            step, epoch = int(state["step"]), int(state["epoch"])
            rows += [(step, epoch, k, v) for k, v in probe(model, optimizer, batches).items()]
            if config.norm in BN_NORMS:
                rows += [(step, epoch, k, v) for k, v in anatomy(model, batches[0][0]).items()]
            store.add_metrics(run_id, rows)
            measured += 1
    return measured
