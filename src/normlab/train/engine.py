"""`fit`: one training run from a RunConfig, with its own model and its own optimizer.

Read top to bottom: set-up (device, data, model, optimizer, schedule, resume), the epoch loop
(train steps, a train_loss window every TRAIN_LOG_EVERY steps, probes), then per epoch the
evaluation (test split in eval mode; held-out train slice in train and eval mode) and the
checkpoint. The hot loop touches the host only at window ends (one `.item()` per window).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from normlab.train import metrics as M
from normlab.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from normlab.train.config import RunConfig
from normlab.train.evaluate import accuracy_and_loss, train_mode_accuracy
from normlab.train.graphed import GraphedStep
from normlab.train.optim import build_optimizer, check_optimizer_owns_model, lr_tensors_to
from normlab.train.parallel import ProcessContext, prepare_model, wrap_ddp
from normlab.train.probes import ActivationProbe, grad_norms, weight_norms
from normlab.train.schedule import build_scheduler, lr_factor

MetricsCallback = Callable[[int, int, dict[str, float]], Any]

HOLDOUT_SEED = 20150211
"""Fixed seed of the held-out slice: every run of a study holds out the same examples."""
EVAL_BATCH_SIZE = 1000
"""Batch size of eval-mode evaluation (no effect on the numbers, only on speed)."""


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

    def absorb(self, other: "LossWindow") -> None:
        """Add another window's sum and steps (one device add per window, not per step)."""
        self.total += other.total
        self.steps += other.steps


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str, ctx: ProcessContext) -> torch.device:
    """"auto" -> cuda when available else cpu; "cuda" -> this process's GPU when distributed."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device={name!r} is not a device; use cpu, cuda, cuda:N or auto") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} but no CUDA device is visible; use device='cpu' or 'auto'")
        if device.index is None:
            local = int(os.environ.get("LOCAL_RANK", ctx.rank % torch.cuda.device_count()))
            device = torch.device("cuda", local if ctx.distributed else torch.cuda.current_device())
    elif device.type != "cpu":
        raise ValueError(f"device={name!r} is not supported; use cpu, cuda, cuda:N or auto")
    return device


def check_device_options(config: RunConfig, device: torch.device) -> None:
    """ValueError unless the config's GPU-only options (bf16, compile, cuda_graph) have a GPU."""
    if device.type == "cuda":
        return
    gpu_only = {  # option -> (on?, how to turn it off)
        "precision='bf16' (autocast)": (config.precision == "bf16", "precision='fp32'"),
        "compile=true (torch.compile)": (config.compile, "compile=false"),
        "cuda_graph=true (replay each step as a CUDA graph)": (config.cuda_graph, "cuda_graph=false"),
    }
    asked = {name: off for name, (on, off) in gpu_only.items() if on}
    if asked:
        verb = "is a GPU option" if len(asked) == 1 else "are GPU options"
        raise ValueError(
            f"{' and '.join(asked)} {verb}, but the run is on {device}; set device='cuda' on a "
            f"machine with a GPU, or set {', '.join(asked.values())}"
        )


def check_runnable_here(config: RunConfig) -> None:
    """ValueError unless this machine can run `config`: its device exists here and its
    GPU-only options are on a GPU. The experiment runner calls it before writing anything."""
    check_device_options(config, resolve_device(config.device, ProcessContext()))


def check_execution(config: RunConfig, device: torch.device, ctx: ProcessContext) -> None:
    """GPU-only options on a GPU, and as many processes as the config says."""
    check_device_options(config, device)
    if config.nproc != ctx.world_size:
        raise ValueError(
            f"nproc={config.nproc} but this process group has {ctx.world_size} process(es); "
            f"launch nproc > 1 runs with normlab.train.distributed, or set nproc={ctx.world_size}"
        )


def model_norm_kwargs(config: RunConfig) -> dict[str, Any]:
    """norm_kwargs plus `backend=config.bn_backend` for norms that take a backend."""
    from normlab.layers import norm_kwargs

    kwargs = dict(config.norm_kwargs)
    if config.bn_backend != "auto" and "backend" in norm_kwargs(config.norm):
        kwargs.setdefault("backend", config.bn_backend)
    return kwargs


def split_holdout(n: int, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, held out) of an n-sample train split; the same for every run.

    The held-out indices stay in random order, so its fixed (unshuffled) batches are i.i.d.
    samples even when a split is stored sorted by class.
    """
    k = int(round(n * fraction))
    if fraction > 0 and k == 0:
        k = 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    return perm[k:].sort().values, perm[:k]


def _stop_requested(stop: Any) -> bool:
    if stop is None:
        return False
    if hasattr(stop, "is_set"):  # threading.Event / multiprocessing.Event
        return bool(stop.is_set())
    return bool(stop())


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
    from normlab.data import BatchLoader, load_dataset
    from normlab.models import build_model

    wall_start = time.perf_counter()
    ctx = ProcessContext.detect()
    device = resolve_device(config.device, ctx)
    check_execution(config, device, ctx)
    per_process = ctx.per_process(config.batch_size)
    if dataset is None:
        dataset = load_dataset(config.dataset, root=config.data_root)
    elif getattr(dataset, "name", config.dataset) != config.dataset:
        raise ValueError(
            f"the dataset passed to fit is {dataset.name!r} but config.dataset is "
            f"{config.dataset!r}; pass the config's dataset (the run id names it) or omit dataset="
        )

    # --- model and its own optimizer -------------------------------------------------------
    seed_everything(config.seed)
    model = build_model(
        config.model, dataset.input_shape, dataset.num_classes, norm=config.norm,
        norm_kwargs=model_norm_kwargs(config), norm_position=config.norm_position,
        activation=config.activation, hidden=config.hidden, init_scale=config.init_scale,
    )
    model = prepare_model(model, ctx, config.sync_bn).to(device)
    optimizer = build_optimizer(model, config)
    check_optimizer_owns_model(model, optimizer)
    train_model = wrap_ddp(model, ctx, device)
    if config.compile:
        train_model = torch.compile(train_model)
    # autocast's weight-cast cache must be off inside a CUDA graph capture (torch's AMP notes)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16,
                                       cache_enabled=not config.cuda_graph)) \
        if config.precision == "bf16" else contextlib.nullcontext

    # --- data: train minus a held-out slice, test --------------------------------------------
    train_idx, hold_idx = split_holdout(len(dataset.train_y), config.holdout_fraction)
    norm_stats = dict(device=device, mean=dataset.mean, std=dataset.std)
    loader = BatchLoader(
        dataset.train_x[train_idx], dataset.train_y[train_idx], config.batch_size, shuffle=True,
        drop_last=True, seed=config.seed, augment=config.augment, batching=config.batching,
        classes_per_batch=config.classes_per_batch, **norm_stats,
    )
    steps_per_epoch = len(loader)  # >= 1: the loader refuses a batch larger than the split
    test_loader = BatchLoader(dataset.test_x, dataset.test_y, EVAL_BATCH_SIZE, shuffle=False,
                              drop_last=False, **norm_stats)
    # train-mode accuracy needs training-sized batches (BN uses their statistics); a slice
    # smaller than one batch is one batch, cut to a multiple of the process count
    hold_batch = min(config.batch_size, len(hold_idx) - len(hold_idx) % ctx.world_size)
    hold_loader = None
    if hold_batch > 0:
        hold_loader = BatchLoader(dataset.train_x[hold_idx], dataset.train_y[hold_idx], hold_batch,
                                  shuffle=False, drop_last=True, **norm_stats)
    total_steps = steps_per_epoch * config.epochs  # optimizer steps of the run
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    scheduler = build_scheduler(optimizer, config.schedule, total_steps, steps_per_epoch)

    # --- metrics and resume -----------------------------------------------------------------
    final: dict[str, float] = {}

    def emit(step: int, epoch: int, values: dict[str, float]) -> None:
        final.update(values)
        if on_metrics is not None and ctx.is_main and values:
            on_metrics(step, epoch, values)

    step, start_epoch, seconds_before = 0, 1, 0.0
    if checkpoint_path is not None and os.path.exists(checkpoint_path):
        state = load_checkpoint(checkpoint_path, config.run_id)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        lr_tensors_to(optimizer, device)  # a graphed run's lr tensors come back on the CPU
        scheduler.load_state_dict(state["scheduler"])
        loader.load_state_dict(state["loader"])
        set_rng_state(state["rng"])
        step, start_epoch, seconds_before = state["step"], state["epoch"] + 1, state["seconds"]
        final.update(state["final"])
        if state["status"] != "running":
            return RunResult(state["status"], dict(final), step, seconds_before)
    else:
        bn_batch = config.batch_size if config.sync_bn else per_process
        emit(0, 0, {M.GLOBAL_BATCH_SIZE: float(config.batch_size), M.BN_BATCH_SIZE: float(bn_batch),
                    M.NUM_PARAMS: float(sum(p.numel() for p in model.parameters() if p.requires_grad)),
                    M.STEPS_PER_EPOCH: float(steps_per_epoch)})

    probes = config.probes
    act_probe = ActivationProbe(model, probes.units) if probes.activations else None
    probe_any = probes.activations or probes.grad_norms or probes.weight_norms
    params = [p for p in model.parameters() if p.requires_grad]
    smoothing = config.optim.label_smoothing
    status = "running"

    def seconds_so_far() -> float:
        return seconds_before + time.perf_counter() - wall_start

    checkpointing = checkpoint_path is not None and config.checkpoint_every_epochs > 0

    def lr_of_step(index: int) -> float:
        """The lr optimizer step `index` (0-based) used, as a float: computed like the
        scheduler does, since the optimizer may hold it as a device tensor."""
        return config.lr * lr_factor(index, config.schedule, total_steps, steps_per_epoch)

    def train_step(x: torch.Tensor, y: torch.Tensor,
                   probe_values: dict[str, float] | None = None) -> torch.Tensor:
        """Forward, loss, backward, (clip), optimizer step; the loss, detached. x: (B, ...),
        y: (B,). Reads nothing on the host, so `GraphedStep` can capture it; `probe_values`
        (eager steps only) receives the per-layer gradient norms before clipping."""
        with autocast():
            logits = train_model(x)  # (B / world, classes)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if probe_values is not None and probes.grad_norms:
            probe_values.update(grad_norms(model))
        if config.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, config.optim.grad_clip)
        optimizer.step()
        return loss.detach()

    # graphed: the captured step also gathers and normalizes its batch from the indices, so
    # the host copies two small tensors per step instead of launching the loader's kernels
    graphed = GraphedStep(lambda idx, aug: train_step(*loader.make_batch(idx, aug))) \
        if config.cuda_graph else None

    def save(epoch: int, outcome: str) -> None:
        """Rank 0 writes; everyone waits so no process resumes from a half-written state.
        The metrics go first: a checkpoint never claims a step whose values are not stored."""
        if ctx.is_main:
            commit = getattr(on_metrics, "commit", None)
            if commit is not None:
                commit()
            save_checkpoint(checkpoint_path, {
                "run_id": config.run_id, "status": outcome, "step": step, "epoch": epoch,
                "seconds": seconds_so_far(), "final": dict(final), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "loader": loader.state_dict(), "rng": rng_state(),
            })
        ctx.barrier()

    def emit_window(window: LossWindow, epoch_window: LossWindow, step: int, epoch: int) -> bool:
        """Emit train_loss, lr (and step_ms) for the window, add it to the epoch's and reset it;
        False when the loss is NaN/inf."""
        if window.steps == 0:
            return True
        epoch_window.absorb(window)
        mean = window.mean(ctx)
        values = {M.TRAIN_LOSS: mean, M.LR: lr_of_step(step - 1)}  # the window's last step
        if probes.step_time:
            values[M.STEP_MS] = 1000.0 * window.seconds() / window.steps
        if not math.isfinite(mean):
            values[M.DIVERGED] = 1.0
        emit(step, epoch, values)
        window.reset()
        return math.isfinite(mean)

    # --- the epoch loop ---------------------------------------------------------------------
    for epoch in range(start_epoch, config.epochs + 1):
        if step >= total_steps:
            break
        train_model.train()
        window, epoch_losses = LossWindow(device), LossWindow(device)
        # batches: (x, y), or (sample indices, augmentation parameters) for the graphed step
        for batch in (loader.index_batches() if graphed is not None else loader):
            if step >= total_steps:
                break
            probe_step = probe_any and (step + 1) % probes.every_steps == 0
            if act_probe is not None and probe_step:
                act_probe.armed = True
            probe_values: dict[str, float] = {}
            if graphed is not None:
                loss = graphed(*batch)  # config refuses the probes that need the eager step
            else:
                x, y = (ctx.shard(t) for t in batch)  # this process's part of the global batch
                loss = train_step(x, y, probe_values if probe_step else None)
            scheduler.step()
            step += 1
            window.add(loss)
            if probe_step:
                if act_probe is not None:
                    probe_values.update(act_probe.collect())
                if probes.weight_norms:
                    probe_values.update(weight_norms(model))
                emit(step, epoch, probe_values)
            if step % M.TRAIN_LOG_EVERY == 0 and not emit_window(window, epoch_losses, step, epoch):
                status = "diverged"
                break
        if status == "running" and not emit_window(window, epoch_losses, step, epoch):
            status = "diverged"
        epoch_values = {M.EPOCH_SECONDS: epoch_losses.seconds()}
        if epoch_losses.steps:
            epoch_values[M.EPOCH_TRAIN_LOSS] = epoch_losses.mean(ctx)
        if status == "diverged":
            emit(step, epoch, epoch_values)
            break

        last = epoch == config.epochs or step >= total_steps
        if epoch % config.eval_every_epochs == 0 or last:
            epoch_values.update(_evaluate(model, test_loader, hold_loader, ctx, autocast))
        emit(step, epoch, epoch_values)
        # every process must agree, or the ones going on wait for the stopped ones forever
        stopping = ctx.any_process(not last and _stop_requested(stop), device)
        if checkpointing and (epoch % config.checkpoint_every_epochs == 0 or last or stopping):
            save(epoch, "finished" if last else "running")
        if stopping:
            status = "stopped"
            break

    if act_probe is not None:
        act_probe.remove()
    if status == "diverged" and checkpointing:
        # remember the outcome, so re-running this config does not train again
        save(epoch, "diverged")
    return RunResult("finished" if status == "running" else status, dict(final), step,
                     seconds_so_far())


def _evaluate(model: nn.Module, test_loader, hold_loader, ctx: ProcessContext, autocast) -> dict[str, float]:
    """test_loss/test_acc in eval mode; the held-out slice in train and eval mode."""
    values = {}
    with autocast():
        values[M.TEST_ACC], values[M.TEST_LOSS] = accuracy_and_loss(model, test_loader)
        if hold_loader is not None:
            train_acc = train_mode_accuracy(model, hold_loader, ctx)
            eval_acc, _ = accuracy_and_loss(model, hold_loader)
            values[M.HOLDOUT_ACC_TRAIN_MODE] = train_acc
            values[M.HOLDOUT_ACC_EVAL_MODE] = eval_acc
            values[M.TRAIN_EVAL_GAP] = train_acc - eval_acc
    model.train()
    return values

