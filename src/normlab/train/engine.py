"""`fit`: one training run from a RunConfig, with its own model and its own optimizer.

Read `fit` top to bottom: build the run (`normlab.train.build`: model, optimizer, schedule,
loaders), resume it from its checkpoint or emit its start values, then the epoch loop: train
steps (`normlab.train.step`: eager or CUDA-graphed, one interface), a train_loss window every
TRAIN_LOG_EVERY steps, probes; per epoch the evaluation (test split in eval mode; held-out
train slice in train and eval mode), the ICS/landscape probe (on copies of the model and the
optimizer), the stop decision and the checkpoint. The hot loop touches the host only at window
ends (one `.item()` per window).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from normlab.train import metrics as M
from normlab.train.build import (
    EVAL_BATCH_SIZE,
    HOLDOUT_SEED,
    Built,
    build,
    check_device_options,
    check_execution,
    check_runnable_here,
    model_norm_kwargs,
    seed_everything,
    split_holdout,
)
from normlab.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from normlab.train.config import RunConfig
from normlab.train.evaluate import accuracy_and_loss, train_mode_accuracy
from normlab.train.ics_probe import first_batches, measure_shift
from normlab.train.optim import lr_tensors_to
from normlab.train.parallel import ProcessContext
from normlab.train.probes import ActivationProbe, weight_norms
from normlab.train.schedule import lr_factor
from normlab.train.step import make_step

MetricsCallback = Callable[[int, int, dict[str, float]], Any]


@dataclass
class RunResult:
    """How a run ended: status, the last value of every metric, steps done, wall seconds.

    status: "finished"; "diverged" (the loss became NaN/inf; what was measured is kept);
    "stopped" (the `stop` callable asked for it; resume from the checkpoint).
    """

    status: Literal["finished", "diverged", "stopped"]
    final: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0


class LossWindow:
    """Training losses summed on the device between emissions: the hot loop adds a 0-d tensor
    per step, and the host reads the sum (one sync) only when the window is emitted."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.total = torch.zeros((), device=self.device)
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss
        self.steps += 1

    def mean(self, ctx: ProcessContext) -> float:
        """Mean loss per step over the window's steps and all processes (syncs)."""
        return float(ctx.all_sum(self.total.clone())) / (self.steps * ctx.world_size)

    def seconds(self) -> float:
        """Wall seconds since the window opened."""
        return time.perf_counter() - self.start

    def absorb(self, other: LossWindow) -> None:
        """Add another window's sum and steps (one device add per window, not per step)."""
        self.total += other.total
        self.steps += other.steps


def _stop_requested(stop: Any) -> bool:
    if stop is None:
        return False
    if hasattr(stop, "is_set"):  # threading.Event / multiprocessing.Event
        return bool(stop.is_set())
    return bool(stop())


class MetricLog:
    """Where a run's measurements go: `final` keeps the last value of every metric (in every
    process); rank 0 also passes each emission to `on_metrics`, and `commit()` to its
    `commit()` when it has one (it returns once everything emitted is stored)."""

    def __init__(self, on_metrics: MetricsCallback | None, ctx: ProcessContext) -> None:
        self.on_metrics = on_metrics if ctx.is_main else None
        self.final: dict[str, float] = {}

    def emit(self, step: int, epoch: int, values: dict[str, float]) -> None:
        self.final.update(values)
        if self.on_metrics is not None and values:
            self.on_metrics(step, epoch, values)

    def commit(self) -> None:
        commit = getattr(self.on_metrics, "commit", None)
        if commit is not None:
            commit()


def start_values(config: RunConfig, run: Built, ctx: ProcessContext) -> dict[str, float]:
    """What a run emits once, at step 0: its batch sizes, trainable scalars and steps per epoch."""
    bn_batch = config.batch_size if config.sync_bn else ctx.per_process(config.batch_size)
    return {
        M.GLOBAL_BATCH_SIZE: float(config.batch_size),
        M.BN_BATCH_SIZE: float(bn_batch),
        M.NUM_PARAMS: float(run.num_trainable),
        M.STEPS_PER_EPOCH: float(run.steps_per_epoch),
    }


def resume(run: Built, path: str | os.PathLike, run_id: str) -> dict[str, Any]:
    """Load the checkpoint at `path` into the built pieces (model, optimizer, schedule, loader
    position, every RNG); returns it (status, step, epoch, seconds, final: the last values)."""
    state = load_checkpoint(path, run_id)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    lr_tensors_to(run.optimizer, run.device)  # a graphed run's lr tensors come back on the CPU
    run.scheduler.load_state_dict(state["scheduler"])
    run.loader.load_state_dict(state["loader"])
    set_rng_state(state["rng"])
    return state


def checkpoint(
    path: str | os.PathLike, run: Built, log: MetricLog, ctx: ProcessContext, header: dict[str, Any]
) -> None:
    """Rank 0 writes `header` (run_id, status, step, epoch, seconds) and the run's state;
    everyone waits so no process resumes from a half-written state. The metrics go first:
    a checkpoint never claims a step whose values are not stored."""
    if ctx.is_main:
        log.commit()
        save_checkpoint(
            path,
            {
                **header,
                "final": dict(log.final),
                "model": run.model.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "loader": run.loader.state_dict(),
                "rng": rng_state(),
            },
        )
    ctx.barrier()


def end_window(
    window: LossWindow, epoch_losses: LossWindow, ctx: ProcessContext, lr: float, step_time: bool
) -> dict[str, float]:
    """The window's values (train_loss, lr, step_ms; diverged when the loss is NaN/inf), its
    steps added to the epoch's; then it starts over. {} when it holds no step."""
    if window.steps == 0:
        return {}
    epoch_losses.absorb(window)
    mean = window.mean(ctx)
    values = {M.TRAIN_LOSS: mean, M.LR: lr}
    if step_time:
        values[M.STEP_MS] = 1000.0 * window.seconds() / window.steps
    if not math.isfinite(mean):
        values[M.DIVERGED] = 1.0
    window.reset()
    return values


def lr_used(config: RunConfig, run: Built, step: int) -> float:
    """The lr the `step`-th optimizer step (1-based) used, as a float: computed like the
    scheduler does, since the optimizer may hold it as a device tensor."""
    return config.lr * lr_factor(step - 1, config.schedule, run.total_steps, run.steps_per_epoch)


def fit(
    config: RunConfig,
    *,
    dataset: Any = None,
    on_metrics: MetricsCallback | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    stop: Callable[[], bool] | Any = None,
) -> RunResult:
    """Train one run: build the model and *its own* optimizer from `config`, train, evaluate.

    Args:
        config: the run (`RunConfig`); nothing outside it changes the numbers.
        dataset: a `normlab.data.Dataset`; default `load_dataset(config.dataset,
            root=config.data_root)`. Passing it lets a study load the data once.
        on_metrics: ``on_metrics(step, epoch, values)`` with every measurement; the names
            are documented in `normlab.train.metrics`. Called by rank 0 only. If it has a
            `commit()` method, that is called before every checkpoint and must return once
            every value emitted so far is stored (exactly-once metrics across crashes).
        checkpoint_path: if the file exists the run resumes from it (same config required);
            it is rewritten atomically every `checkpoint_every_epochs` epochs and at the end.
        stop: a callable returning True (or an Event that is set) to stop after the current
            epoch's checkpoint; the result's status is then "stopped".

    Returns:
        RunResult(status, final=last value of every metric, steps, seconds).

    Inside an initialized torch.distributed group (see `normlab.train.distributed.launch`),
    `config.batch_size` is the global batch: every process draws the same global batch and
    trains on its contiguous shard, the model is wrapped in DistributedDataParallel (after
    BN -> SyncBatchNorm when `config.sync_bn`), and only rank 0 emits and checkpoints.
    GPU only: `precision="bf16"` (autocast), `compile=True` and `cuda_graph=True` (each step
    after 3 eager warm-up steps replayed as one CUDA graph, see `normlab.train.graphed`); on
    CPU they are errors.

    Example:
        >>> result = fit(RunConfig(epochs=2), on_metrics=lambda s, e, v: print(s, v))
        >>> result.status, result.final["test_acc"]
    """
    wall_start = time.perf_counter()
    ctx = ProcessContext.detect()
    run = build(config, dataset, ctx)
    log = MetricLog(on_metrics, ctx)
    checkpointing = checkpoint_path is not None and config.checkpoint_every_epochs > 0

    # the mechanism probe's fixed batches (the first of epoch 1), taken before any resume
    shift_every = config.probes.ics_every_epochs
    shift_batches = first_batches(run.loader) if shift_every else []

    # --- resume from the checkpoint, or start ------------------------------------------------
    step, start_epoch, seconds_before = 0, 1, 0.0
    if checkpoint_path is not None and os.path.exists(checkpoint_path):
        state = resume(run, checkpoint_path, config.run_id)
        step, start_epoch, seconds_before = state["step"], state["epoch"] + 1, state["seconds"]
        log.final.update(state["final"])
        if state["status"] != "running":  # finished or diverged: nothing to train
            return RunResult(state["status"], dict(log.final), step, seconds_before)
    else:
        log.emit(0, 0, start_values(config, run, ctx))
        if shift_every:
            log.emit(0, 0, measure_shift(run.model, run.optimizer, shift_batches))

    train_step = make_step(config, run, ctx)
    probes = config.probes
    act_probe = ActivationProbe(run.model, probes.units) if probes.activations else None
    probing = probes.activations or probes.grad_norms or probes.weight_norms
    status = "running"

    # --- the epoch loop -------------------------------------------------------------------------
    for epoch in range(start_epoch, config.epochs + 1):
        if step >= run.total_steps:
            break
        run.train_model.train()
        window, epoch_losses = LossWindow(run.device), LossWindow(run.device)
        for batch in train_step.batches():
            if step >= run.total_steps:
                break
            probe_now = probing and (step + 1) % probes.every_steps == 0
            if act_probe is not None and probe_now:
                act_probe.armed = True  # its hooks record this step's forward pass
            probe_values: dict[str, float] = {}
            loss = train_step(batch, probe_values if probe_now and probes.grad_norms else None)
            run.scheduler.step()
            step += 1
            window.add(loss)
            if probe_now:
                if act_probe is not None:
                    probe_values.update(act_probe.collect())
                if probes.weight_norms:
                    probe_values.update(weight_norms(run.model))
                log.emit(step, epoch, probe_values)
            if step % M.TRAIN_LOG_EVERY == 0:
                values = end_window(window, epoch_losses, ctx, lr_used(config, run, step), probes.step_time)
                log.emit(step, epoch, values)
                if M.DIVERGED in values:
                    status = "diverged"
                    break
        if status == "running":  # the epoch's last, partial window
            values = end_window(window, epoch_losses, ctx, lr_used(config, run, step), probes.step_time)
            log.emit(step, epoch, values)
            if M.DIVERGED in values:
                status = "diverged"

        epoch_values = {M.EPOCH_SECONDS: epoch_losses.seconds()}
        if epoch_losses.steps:
            epoch_values[M.EPOCH_TRAIN_LOSS] = epoch_losses.mean(ctx)
        if status == "diverged":
            log.emit(step, epoch, epoch_values)
            break
        last = epoch == config.epochs or step >= run.total_steps
        if epoch % config.eval_every_epochs == 0 or last:
            epoch_values.update(evaluate(run, ctx))
        log.emit(step, epoch, epoch_values)
        if shift_every and (epoch % shift_every == 0 or last):
            log.emit(step, epoch, measure_shift(run.model, run.optimizer, shift_batches))

        # every process must agree, or the ones going on wait for the stopped ones forever
        stopping = ctx.any_process(not last and _stop_requested(stop), run.device)
        if checkpointing and (epoch % config.checkpoint_every_epochs == 0 or last or stopping):
            checkpoint(
                checkpoint_path,
                run,
                log,
                ctx,
                {
                    "run_id": config.run_id,
                    "status": "finished" if last else "running",
                    "step": step,
                    "epoch": epoch,
                    "seconds": seconds_before + time.perf_counter() - wall_start,
                },
            )
        if stopping:
            status = "stopped"
            break

    if act_probe is not None:
        act_probe.remove()
    if status == "diverged" and checkpointing:
        # remember the outcome, so re-running this config does not train again
        checkpoint(
            checkpoint_path,
            run,
            log,
            ctx,
            {
                "run_id": config.run_id,
                "status": "diverged",
                "step": step,
                "epoch": epoch,
                "seconds": seconds_before + time.perf_counter() - wall_start,
            },
        )
    return RunResult(
        "finished" if status == "running" else status,
        dict(log.final),
        step,
        seconds_before + time.perf_counter() - wall_start,
    )


def evaluate(run: Built, ctx: ProcessContext) -> dict[str, float]:
    """test_loss/test_acc in eval mode; the held-out slice in train and eval mode."""
    values = {}
    with run.autocast():
        values[M.TEST_ACC], values[M.TEST_LOSS] = accuracy_and_loss(run.model, run.test_loader)
        if run.hold_loader is not None:
            train_acc = train_mode_accuracy(run.model, run.hold_loader, ctx)
            eval_acc, _ = accuracy_and_loss(run.model, run.hold_loader)
            values[M.HOLDOUT_ACC_TRAIN_MODE] = train_acc
            values[M.HOLDOUT_ACC_EVAL_MODE] = eval_acc
            values[M.TRAIN_EVAL_GAP] = train_acc - eval_acc
    run.model.train()
    return values


__all__ = [  # the building helpers are re-exported: callers of the engine find them here
    "EVAL_BATCH_SIZE", "HOLDOUT_SEED", "LossWindow", "MetricLog", "RunResult", "check_device_options",
    "check_execution", "check_runnable_here", "evaluate", "fit", "model_norm_kwargs", "resume",
    "seed_everything", "split_holdout",
]  # fmt: skip
