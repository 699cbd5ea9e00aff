"""Every metric `fit` emits: its name, unit and when it is emitted. The analysis layer relies
on these names; change them here (and only here) together with a note to the analysis owner.

`fit(..., on_metrics=cb)` calls ``cb(step, epoch, values)`` where `step` is the number of
optimizer steps completed so far (0 before training), `epoch` the 1-based epoch the values
belong to (0 before training) and `values` a flat ``dict[str, float]``. Only rank 0 calls it.

| name                       | unit              | emitted                                        |
|----------------------------|-------------------|------------------------------------------------|
| global_batch_size          | samples           | once, step 0: samples per optimizer step       |
| bn_batch_size              | samples           | once, step 0: samples per process = per BN call|
| num_params                 | count             | once, step 0: trainable parameters             |
| steps_per_epoch            | steps             | once, step 0                                   |
| train_loss                 | nats (CE)         | every TRAIN_LOG_EVERY steps and at epoch end:  |
|                            |                   | mean training objective over the steps since   |
|                            |                   | the last emission (label smoothing included)   |
| lr                         | 1 (step size)     | with train_loss: lr used by the last step      |
| step_ms                    | ms / step         | with train_loss when probes.step_time: mean    |
|                            |                   | wall time per optimizer step in the window     |
|                            |                   | (data, forward, backward, update)              |
| diverged                   | 1                 | once, when the loss became NaN/inf (value 1.0) |
| epoch_train_loss           | nats (CE)         | each epoch end: mean train_loss over the epoch |
| epoch_seconds              | s                 | each epoch end: wall time of its training steps|
| test_loss                  | nats (CE)         | each eval epoch: plain CE on the test split,   |
|                            |                   | model.eval() (no label smoothing)              |
| test_acc                   | fraction 0..1     | each eval epoch, model.eval()                  |
| holdout_acc_train_mode     | fraction 0..1     | each eval epoch when holdout_fraction > 0: the |
|                            |                   | held-out train slice in model.train() (batch   |
|                            |                   | statistics, batches of batch_size; running     |
|                            |                   | statistics restored afterwards)                |
| holdout_acc_eval_mode      | fraction 0..1     | same slice, model.eval() (running statistics)  |
| train_eval_gap             | fraction          | holdout_acc_train_mode - holdout_acc_eval_mode |
| act/<layer>/mean           | activation units  | every probes.every_steps when probes.activations|
| act/<layer>/std            | activation units  |   input of each activation module <layer> (the |
| act/<layer>/u<c>/p15|p50|p85 | activation units|   pre-activation, Ioffe & Szegedy Fig. 1), and |
|                            |                   |   output of each Linear/Conv <layer> (what its |
|                            |                   |   norm receives, before normalization), on the |
|                            |                   |   training batch: mean/std over all its        |
|                            |                   |   elements, percentiles of tracked channels c  |
| grad_norm                  | L2                | every probes.every_steps when probes.grad_norms|
| grad_norm/<param>          | L2                |   total and per parameter, before clipping     |
| weight_norm/<param>        | L2                | every probes.every_steps when                  |
|                            |                   |   probes.weight_norms, after the update        |
| ics/<k>/l2                 | L2 (grad units)   | when probes.ics_every_epochs = E: at step 0,   |
| ics/<k>/cos                | cosine -1..1      |   every E epochs and at the last epoch: layer  |
|                            |                   |   k's ||G - G'|| and cos(G, G') (Santurkar et  |
|                            |                   |   al. 2018 Def. 2.1), k = 2..K, mean over      |
|                            |                   |   ICS_PROBE_BATCHES fixed training batches     |
| landscape/loss_range       | nats (CE)         |   same points: along the gradient, at          |
| landscape/grad_change      | L2 (grad units)   |   LANDSCAPE_STEP_SIZES, the loss's max - min,  |
| landscape/beta             | 1 / param units   |   the largest gradient change, the effective   |
|                            |                   |   beta-smoothness (Santurkar et al. Fig. 4)    |

<layer> is the activation's or Linear/Conv's qualified name in the model (e.g. ``blocks.0.act``,
``blocks.0.linear``); <k> a Linear/Conv layer's position, 1 = the first (input) layer;
<param> a parameter's qualified name (e.g. ``blocks.0.linear.weight``); <c> a channel index
from `tracked_units`.
"""

from __future__ import annotations

TRAIN_LOG_EVERY = 10
"""Steps between train_loss emissions (the hot loop syncs with the device only then)."""

# once at the start (step 0)
GLOBAL_BATCH_SIZE = "global_batch_size"
BN_BATCH_SIZE = "bn_batch_size"
NUM_PARAMS = "num_params"
STEPS_PER_EPOCH = "steps_per_epoch"
# every TRAIN_LOG_EVERY steps
TRAIN_LOSS = "train_loss"
LR = "lr"
STEP_MS = "step_ms"
DIVERGED = "diverged"
# each epoch
EPOCH_TRAIN_LOSS = "epoch_train_loss"
EPOCH_SECONDS = "epoch_seconds"
TEST_LOSS = "test_loss"
TEST_ACC = "test_acc"
HOLDOUT_ACC_TRAIN_MODE = "holdout_acc_train_mode"
HOLDOUT_ACC_EVAL_MODE = "holdout_acc_eval_mode"
TRAIN_EVAL_GAP = "train_eval_gap"
# probes
GRAD_NORM = "grad_norm"
PERCENTILES = (15, 50, 85)
ICS_PROBE_BATCHES = 4
"""Training batches (the first of epoch 1) each ICS/landscape measurement averages over."""
LANDSCAPE_STEP_SIZES = (0.05, 0.1, 0.2, 0.4)
"""Step sizes along the gradient of the landscape probe (Santurkar et al. Fig. 4), the same for
every network."""
LANDSCAPE_LOSS_RANGE = "landscape/loss_range"
LANDSCAPE_GRAD_CHANGE = "landscape/grad_change"
LANDSCAPE_BETA = "landscape/beta"
LANDSCAPE_KEYS = (LANDSCAPE_LOSS_RANGE, LANDSCAPE_GRAD_CHANGE, LANDSCAPE_BETA)


def act_key(layer: str, stat: str) -> str:
    """``act/<layer>/<stat>`` for stat mean or std."""
    return f"act/{layer}/{stat}"


def act_unit_key(layer: str, unit: int, percentile: int) -> str:
    """``act/<layer>/u<unit>/p<percentile>``."""
    return f"act/{layer}/u{unit}/p{percentile}"


def grad_norm_key(param: str) -> str:
    """``grad_norm/<param>``."""
    return f"grad_norm/{param}"


def weight_norm_key(param: str) -> str:
    """``weight_norm/<param>``."""
    return f"weight_norm/{param}"


def ics_key(layer: int, stat: str) -> str:
    """``ics/<k>/l2`` or ``ics/<k>/cos`` for layer k (1 = the first Linear/Conv)."""
    return f"ics/{layer}/{stat}"


def parse_key(name: str) -> dict[str, str | int | None]:
    """Split a probe metric name into its parts, for the analysis layer.

    >>> parse_key("act/blocks.0.act/u3/p15")
    {'kind': 'act', 'layer': 'blocks.0.act', 'unit': 3, 'stat': 'p15'}
    >>> parse_key("grad_norm/head.weight")
    {'kind': 'grad_norm', 'layer': 'head.weight', 'unit': None, 'stat': None}
    """
    parts = name.split("/")
    if parts[0] == "act" and len(parts) == 4:
        return {"kind": "act", "layer": parts[1], "unit": int(parts[2][1:]), "stat": parts[3]}
    if parts[0] == "act" and len(parts) == 3:
        return {"kind": "act", "layer": parts[1], "unit": None, "stat": parts[2]}
    if parts[0] in ("grad_norm", "weight_norm") and len(parts) == 2:
        return {"kind": parts[0], "layer": parts[1], "unit": None, "stat": None}
    return {"kind": name, "layer": None, "unit": None, "stat": None}
